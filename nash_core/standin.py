"""Offline stand-ins for hub base models: the exact architecture, random weights, a real tokenizer.

The real recipes (``configs/samsum-t5-base.yaml`` and friends) name hub models that cannot be
downloaded on an offline machine. What matters for memory, time, disk, accounting,
materialisation, export and loading is the architecture, not the weights, so
:func:`write_standin` writes a ``save_pretrained`` directory (safetensors) with the shape of
t5-base, google/flan-t5-base, google/mt5-base or facebook/bart-base, random weights, and a real
subword tokenizer of the right family trained offline (``tokenizers``) on the demo corpus:

- T5 family: a SentencePiece-style Unigram model (Metaspace "▁" pre-tokenizer, ``</s>`` appended)
  with ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2 and T5's 100 sentinels ``<extra_id_0..99>`` as the
  highest ids (``<extra_id_0>`` last, as in T5's own vocabulary);
- BART: byte-level BPE with ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3 and ``<mask>`` last,
  ``<s> ... </s>`` around every input.

The demo corpus has about 500 distinct words, so the trained vocabulary is far smaller than the
real one; the model keeps the real embedding size (32,128 / 250,112 / 50,265 rows), which is what
the memory of the embeddings, the LM head and distillation over the vocabulary depends on.

Untied LM heads (Flan-T5, mT5): transformers 5 forces ``tie_word_embeddings=True`` on T5/MT5
configs, so the head is created as its own parameter here; ``from_pretrained`` keeps it untied
because both tensors are in the checkpoint with different values.
"""

from __future__ import annotations

from pathlib import Path

# name -> (family, config kwargs). Values from the hub configs of these models.
SHAPES: dict[str, tuple[str, dict]] = {
    "t5-base": (
        "t5",
        {
            "vocab_size": 32128,
            "d_model": 768,
            "d_ff": 3072,
            "d_kv": 64,
            "num_heads": 12,
            "num_layers": 12,
            "num_decoder_layers": 12,
            "feed_forward_proj": "relu",
            "tie_word_embeddings": True,
        },
    ),
    "flan-t5-base": (
        "t5",
        {
            "vocab_size": 32128,
            "d_model": 768,
            "d_ff": 2048,
            "d_kv": 64,
            "num_heads": 12,
            "num_layers": 12,
            "num_decoder_layers": 12,
            "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": False,
        },
    ),
    "mt5-base": (
        "mt5",
        {
            "vocab_size": 250112,
            "d_model": 768,
            "d_ff": 2048,
            "d_kv": 64,
            "num_heads": 12,
            "num_layers": 12,
            "num_decoder_layers": 12,
            "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": False,
        },
    ),
    "bart-base": (
        "bart",
        {
            "vocab_size": 50265,
            "d_model": 768,
            "encoder_layers": 6,
            "decoder_layers": 6,
            "encoder_attention_heads": 12,
            "decoder_attention_heads": 12,
            "encoder_ffn_dim": 3072,
            "decoder_ffn_dim": 3072,
            "max_position_embeddings": 1024,
            "activation_function": "gelu",
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.1,
            "scale_embedding": False,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "decoder_start_token_id": 2,
            "forced_bos_token_id": 0,
            "forced_eos_token_id": 2,
            "tie_word_embeddings": True,
        },
    ),
}
# hub id of the model each stand-in stands in for (README, config.json["nash_standin"])
HUB_IDS = {
    "t5-base": "google-t5/t5-base",
    "flan-t5-base": "google/flan-t5-base",
    "mt5-base": "google/mt5-base",
    "bart-base": "facebook/bart-base",
}
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
BART_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
NUM_SENTINELS = 100


def _corpus_texts(num_dialogues: int, seed: int) -> list[str]:
    from nash_core.demo_corpus import generate_corpus

    rows = generate_corpus(num_dialogues, seed)
    # the "summarize: " prefix of the T5 recipes is tokenised too: give it pieces of its own
    return [t for r in rows for t in (r["source"], r["target"])] + ["summarize: "] * 50


def train_t5_tokenizer(texts: list[str], vocab_size: int = 4000):
    """SentencePiece-style Unigram tokenizer with T5's special tokens and 100 sentinels."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=T5_SPECIALS, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # T5's sentinels are the highest ids, <extra_id_0> the very last one
    sentinels = [f"<extra_id_{i}>" for i in reversed(range(NUM_SENTINELS))]
    tok.add_special_tokens(sentinels)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(reversed(sentinels)),
        model_max_length=512,
    )


def train_bart_tokenizer(texts: list[str], vocab_size: int = 4000):
    """Byte-level BPE tokenizer with BART's special tokens (``<s> ... </s>``, ``<mask>`` last)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BART_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=1024,
    )


def standin_config(
    shape: str,
    encoder_layers: int | None = None,
    decoder_layers: int | None = None,
    overrides: dict | None = None,
):
    """The transformers config of ``shape``, optionally with fewer layers (tests) and other
    config values replaced (``overrides``: a dry run's narrow widths)."""
    from transformers import BartConfig, MT5Config, T5Config

    if shape not in SHAPES:
        raise ValueError(f"unknown stand-in shape {shape!r}; choose one of {sorted(SHAPES)}")
    family, kwargs = SHAPES[shape]
    kwargs = dict(kwargs) | dict(overrides or {})
    if family == "bart":
        if encoder_layers:
            kwargs["encoder_layers"] = encoder_layers
        if decoder_layers:
            kwargs["decoder_layers"] = decoder_layers
        return BartConfig(**kwargs)
    if encoder_layers:
        kwargs["num_layers"] = encoder_layers
    if decoder_layers:
        kwargs["num_decoder_layers"] = decoder_layers
    common = {
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }
    return (MT5Config if family == "mt5" else T5Config)(**common, **kwargs)


def build_standin_model(config, untied_head: bool, seed: int = 0):
    """Random-init model of ``config``; an untied head gets its own parameter."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config)
    if untied_head:
        head = model.lm_head
        weight = torch.empty_like(model.get_input_embeddings().weight)
        torch.nn.init.normal_(weight, std=config.d_model**-0.5)
        head.weight = torch.nn.Parameter(weight)
    return model.eval()


def write_standin(
    shape: str,
    out_dir: str | Path,
    *,
    encoder_layers: int | None = None,
    decoder_layers: int | None = None,
    num_dialogues: int = 4000,
    tokenizer_vocab: int = 4000,
    seed: int = 0,
    overrides: dict | None = None,
) -> Path:
    """Write the stand-in base-model directory for ``shape`` to ``out_dir`` (atomically)."""
    from nash_core.io import atomic_dir

    config = standin_config(shape, encoder_layers, decoder_layers, overrides)
    family = SHAPES[shape][0]
    texts = _corpus_texts(num_dialogues, seed)
    if family == "bart":
        tokenizer = train_bart_tokenizer(texts, tokenizer_vocab)
    else:
        tokenizer = train_t5_tokenizer(texts, tokenizer_vocab)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"tokenizer ({len(tokenizer)}) larger than the vocabulary")
    untied = SHAPES[shape][1].get("tie_word_embeddings") is False
    model = build_standin_model(config, untied_head=untied, seed=seed)
    model.config.nash_standin = {
        "shape": shape,
        "stands_in_for": HUB_IDS[shape],
        "weights": "random",
        "tokenizer": "demo corpus, " + ("byte-level BPE" if family == "bart" else "Unigram"),
        "untied_head": untied,
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return out_dir


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ rehearsal helpers
def force_stage_sparsity(stage_dir: str | Path, sparsity: float) -> None:
    """Rewrite a pruning stage's stored masks so the deterministic ones close ``sparsity`` of
    every group (heads, FFN units): a few training steps from random weights move log_alpha
    too little to prune anything, and the export path must be checked at the real target."""
    import torch

    from nash_core.masks import MaskSet
    from nash_core.sparsity import MASKS_FILE, load_pruning_state

    state = load_pruning_state(stage_dir)
    masks = MaskSet(state["specs"])
    masks.load_state_dict(state["masks"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for group in masks.groups.values():
            alpha = group.log_alpha
            flat = alpha.view(alpha.shape[0], -1)
            n = flat.shape[1]
            closed = round(sparsity * n)
            for row in range(flat.shape[0]):
                order = torch.randperm(n, generator=g)
                flat[row].fill_(10.0)
                flat[row, order[:closed]] = -10.0
    raw = torch.load(Path(stage_dir) / MASKS_FILE, map_location="cpu", weights_only=True)
    raw["masks"] = masks.state_dict()
    torch.save(raw, Path(stage_dir) / MASKS_FILE)


def masked_model(stage_dir: str | Path):
    """``(model, tokenizer)``: a stage's student with its deterministic masks attached (eval)."""
    from nash_core.loading import load_seq2seq
    from nash_core.masks import MaskSet
    from nash_core.sparsity import load_pruning_state

    model, tokenizer = load_seq2seq(stage_dir)
    state = load_pruning_state(stage_dir)
    masks = MaskSet(state["specs"])
    masks.load_state_dict(state["masks"])
    masks.attach(model)
    return model.eval(), tokenizer


# fresh-process check: plain transformers, nash_core not importable
FRESH_GENERATE = """
import json, sys, time
sys.modules["nash_core"] = None
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
torch.set_num_threads(1)
path, texts, new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True).eval()
load_s = time.perf_counter() - t
tok = AutoTokenizer.from_pretrained(path)
enc = tok(texts, return_tensors="pt", padding=True)
with torch.no_grad():
    out = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         num_beams=1, suppress_tokens=[tok.pad_token_id, tok.eos_token_id],
                         forced_bos_token_id=None, forced_eos_token_id=None)
print(json.dumps({"class": type(model).__name__, "load_s": load_s, "tokens": out.tolist()}))
"""


def generate_tokens(model, tokenizer, texts: list[str], new_tokens: int = 8) -> list:
    """Greedy tokens of ``texts`` with the same settings as :data:`FRESH_GENERATE`."""
    import torch

    enc = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
            suppress_tokens=[tokenizer.pad_token_id, tokenizer.eos_token_id],
            forced_bos_token_id=None,  # BART forces <s> / </s>: EOS is suppressed here
            forced_eos_token_id=None,
        )
    return out.tolist()


def fresh_process_generate(export_dir: str | Path, texts: list[str], new_tokens: int = 8) -> dict:
    """Load ``export_dir`` with plain ``AutoModelForSeq2SeqLM.from_pretrained(...,
    trust_remote_code=True)`` in a new interpreter and generate: {class, load_s, tokens}."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            FRESH_GENERATE,
            str(export_dir),
            json.dumps(texts),
            str(new_tokens),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
        cwd=str(export_dir),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fresh-process load of {export_dir} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
