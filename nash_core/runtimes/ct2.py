"""The ``ctranslate2`` runtime: convert a candidate to a CTranslate2 model, verify it, run it.

API (all a caller needs)::

    from nash_core.runtimes.ct2 import CT2Generator, convert
    out = convert("runs/x/nash-k2", "runs/x/nash-k2.ct2-int8", quantization="int8")
    gen = CT2Generator(out, intra_threads=1)
    texts = gen.generate(sources, eval_cfg)          # same decoding protocol as PyTorch

What converts: any directory this project writes for T5, T5 v1.1 / Flan-T5 (gated FFN, untied
head), mT5 and BART -- teachers, plain HF students (SFT, magnitude) and NASH / CoFi exports.
CTranslate2's model spec has ONE head count per stack and T5's relative-position bias is
computed once (layer 0, for all original heads) and shared, so an export with per-layer head
sets is padded back before conversion: every kept head returns to its ORIGINAL index (its
``d_kv`` rows of q/k/v, its columns of o), pruned heads are zero rows / columns (a zero value
and output contribute nothing: exact). A removed sub-layer (no heads, no FFN units) becomes zero
projections with a layer norm of ones (T5; BART keeps its post-norm and output bias), which adds
exactly nothing to the residual stream. Per-layer FFN widths convert as they are (the spec reads
each layer's matrices); a zero-width BART FFN is padded to one zero unit.

Not expressible: CoFi's hidden-dimension pruning (the norms run over the kept width), a model
family CTranslate2 has no loader for, and any conversion whose check fails: these raise
:class:`NotExpressible` and the model stays a PyTorch candidate.

Every conversion is checked, never trusted: before the quantised model is written, the float32
conversion scores a few fixed source/target pairs and its per-token log-probabilities must match
the PyTorch model's within ``tolerance`` (the stock converter turns per-layer head counts into a
model that runs without error and writes wrong text). The output is written to a temporary
directory and renamed into place, so nothing half-converted is ever left behind.

Transformers 5 quirk handled here: ``T5Config`` always says ``tie_word_embeddings=True`` and
keeps the real "scale decoder outputs by d_model**-0.5" switch in ``scale_decoder_outputs``;
the stock loader reads the former, which would scale an untied (v1.1) head. mT5 never scales.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from nash_core.errors import ModelError
from nash_core.io import atomic_dir, atomic_write_json, read_json
from nash_core.runtimes.base import NotExpressible, Runtime, register_runtime

RUNTIME = "CTranslate2"
META_FILE = "nash_runtime.json"
TOKENIZER_DIR = "hf_tokenizer"
#: weight quantisations a converted directory can hold (CTranslate2's own names)
QUANTIZATIONS = (
    "float32",
    "int8",
    "int8_float32",
    "int8_bfloat16",
    "int8_float16",
    "float16",
    "bfloat16",
    "int16",
)
#: default maximum |d log-prob| between the float32 conversion and PyTorch
TOLERANCE = 1e-3
_TOKEN_IDS = ("decoder_start_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id")


def _ct2():
    try:
        import ctranslate2
    except ImportError as exc:  # a declared dependency; say how to get it
        raise ModelError(
            "the ctranslate2 runtime needs the 'ctranslate2' package: "
            "pip install 'ctranslate2>=4.5'"
        ) from exc
    return ctranslate2


# --------------------------------------------------------------------------- padding
class _Norm(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = None


class _T5Attn(nn.Module):
    """Zero q/k/v/o of full shape: what the converter reads from a T5 attention."""

    def __init__(self, d_model: int, inner: int):
        super().__init__()
        for name, (i, o) in zip("qkvo", [(d_model, inner)] * 3 + [(inner, d_model)]):
            setattr(self, name, _zeros(i, o, bias=False))
        self.has_relative_attention_bias = False


class _T5Sub(nn.Module):
    """A removed T5 sub-layer as the converter sees one: zero projections, norm of ones."""

    def __init__(self, attr: str, module: nn.Module, d_model: int):
        super().__init__()
        setattr(self, attr, module)
        self.layer_norm = _Norm(d_model)


def _zeros(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    lin = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        lin.weight.zero_()
        if bias:
            lin.bias.zero_()
    return lin


def _head_rows(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    return torch.tensor(
        [h * head_dim + d for h in heads for d in range(head_dim)], dtype=torch.long
    )


def _pad_rows(lin: nn.Linear, rows: torch.Tensor, full: int) -> nn.Linear:
    new = _zeros(lin.in_features, full, lin.bias is not None)
    with torch.no_grad():
        new.weight[rows] = lin.weight
        if lin.bias is not None:
            new.bias[rows] = lin.bias
    return new


def _pad_cols(lin: nn.Linear, cols: torch.Tensor, full: int) -> nn.Linear:
    new = _zeros(full, lin.out_features, lin.bias is not None)
    with torch.no_grad():
        new.weight[:, cols] = lin.weight
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def _pad_t5(model: nn.Module, shapes: dict) -> None:
    cfg = model.config
    inner = cfg.num_heads * cfg.d_kv
    for stack in ("encoder", "decoder"):
        for block, spec in zip(getattr(model, stack).block, shapes[stack]):
            subs = [(0, "SelfAttention", spec.get("self"))]
            if stack == "decoder":
                subs.append((1, "EncDecAttention", spec.get("cross")))
            for index, attr, heads in subs:
                attn = getattr(block.layer[index], attr, None)
                if attn is None:  # the whole sub-layer was removed
                    block.layer[index] = _T5Sub(attr, _T5Attn(cfg.d_model, inner), cfg.d_model)
                elif attn.q.out_features != inner:
                    rows = _head_rows(heads, cfg.d_kv)
                    for name in "qkv":
                        setattr(attn, name, _pad_rows(getattr(attn, name), rows, inner))
                    attn.o = _pad_cols(attn.o, rows, inner)
            if not hasattr(block.layer[-1], "DenseReluDense"):  # FFN removed (nn.Identity)
                dense = nn.Module()
                names = ("wi_0", "wi_1") if cfg.is_gated_act else ("wi",)
                for name in names:
                    setattr(dense, name, _zeros(cfg.d_model, 1, bias=False))
                dense.wo = _zeros(1, cfg.d_model, bias=False)
                block.layer[-1] = _T5Sub("DenseReluDense", dense, cfg.d_model)


def _pad_bart_attn(attn: nn.Module, heads, n_heads: int, d_model: int) -> nn.Module:
    head_dim = d_model // n_heads
    inner = n_heads * head_dim
    if attn.num_heads == n_heads:
        return attn
    if attn.num_heads == 0:  # headless: only its output bias (if any) is left
        full = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(full, name, _zeros(d_model, inner, bias=True))
        full.out_proj = _zeros(inner, d_model, bias=True)
        if attn.out_proj.bias is not None:
            with torch.no_grad():
                full.out_proj.bias.copy_(attn.out_proj.bias)
        return full
    rows = _head_rows(heads, head_dim)
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(attn, name, _pad_rows(getattr(attn, name), rows, inner))
    attn.out_proj = _pad_cols(attn.out_proj, rows, inner)
    return attn


def _pad_bart(model: nn.Module, shapes: dict) -> None:
    cfg = model.config
    for stack in ("encoder", "decoder"):
        n_heads = getattr(cfg, f"{stack}_attention_heads")
        for layer, spec in zip(getattr(model.model, stack).layers, shapes[stack]):
            kinds = [("self_attn", spec.get("self"))]
            if stack == "decoder":
                kinds.append(("encoder_attn", spec.get("cross")))
            for attr, heads in kinds:
                setattr(
                    layer, attr, _pad_bart_attn(getattr(layer, attr), heads, n_heads, cfg.d_model)
                )
            if layer.fc1.out_features == 0:  # no FFN unit left: one zero unit
                bias = layer.fc2.bias
                layer.fc1 = _zeros(cfg.d_model, 1, bias=True)
                layer.fc2 = _zeros(1, cfg.d_model, bias=True)
                if bias is not None:
                    with torch.no_grad():
                        layer.fc2.bias.copy_(bias)
            elif layer.fc2.bias is None:
                layer.fc2.bias = nn.Parameter(torch.zeros(cfg.d_model))


def padded_for_ct2(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose attention shapes CTranslate2's spec can express (see module
    docstring); the copy is only read by the converter, never run. Raises NotExpressible."""
    nash = getattr(model.config, "nash", None) or {}
    shapes = nash.get("shapes")
    if shapes is None:
        return model  # a stock-shaped model converts as it is
    hidden = shapes.get("hidden")
    if hidden and hidden["kept"] != hidden["full"]:
        raise NotExpressible(
            RUNTIME,
            f"CoFi pruned the hidden dimension ({hidden['kept']} of {hidden['full']} kept); "
            "the converted model's norms would run over the full width",
        )
    padded = copy.deepcopy(model)
    {"t5": _pad_t5, "bart": _pad_bart}[shapes["family"]](padded, shapes)
    return padded


# --------------------------------------------------------------------------- conversion
def _spec(model: nn.Module, tokenizer):
    """The CTranslate2 model spec of a (padded) model, via the stock loader of its config."""
    from ctranslate2.converters import transformers as ct2_transformers

    config_name = type(model.config).__name__
    loader = ct2_transformers._MODEL_LOADERS.get(config_name)  # instances, keyed by config
    if loader is None:
        raise NotExpressible(RUNTIME, f"no CTranslate2 loader for {config_name}")
    if config_name == "BartConfig" and not hasattr(model.config, "normalize_before"):
        model.config.normalize_before = False  # BART is post-norm; transformers 5 dropped it
    loader = _vocabulary_filling_embedding(loader)
    try:
        with torch.no_grad():
            spec = loader(model, tokenizer)
        if config_name in ("T5Config", "MT5Config"):
            scale = getattr(model.config, "scale_decoder_outputs", False)
            spec.decoder.scale_outputs = model.config.d_model**-0.5 if scale else 1.0
        _fill_special_tokens(spec.config, model, tokenizer)
        spec.validate()
    except NotExpressible:
        raise
    except (ValueError, KeyError, AttributeError, NotImplementedError, RuntimeError) as exc:
        raise NotExpressible(
            RUNTIME, f"the converter failed ({type(exc).__name__}: {exc})"
        ) from exc
    return spec


UNUSED_TOKEN = "<nash_unused_{}>"


def _vocabulary_filling_embedding(loader):
    """``loader`` with a vocabulary as long as the embedding.

    An embedding can have more rows than the tokenizer has tokens (t5-base: 32,128 rows, 32,100
    tokens; a BART fine-tuned with a trimmed tokenizer). CTranslate2's T5 loader pads such a
    vocabulary itself, its BART loader refuses it; the rows past the tokenizer are given
    placeholder names (``<nash_unused_N>``), which no text encodes to and which decode to
    ``<unk>``, exactly as those ids do in PyTorch."""

    class Filled(type(loader)):
        def get_vocabulary(self, model, tokenizer):
            tokens = list(super().get_vocabulary(model, tokenizer))
            rows = model.get_input_embeddings().num_embeddings
            return tokens + [UNUSED_TOKEN.format(i) for i in range(rows - len(tokens))]

    return Filled()


def _fill_special_tokens(config, model: nn.Module, tokenizer) -> None:
    """CTranslate2 needs every special token named; a tokenizer without one (a BOS-less word
    tokenizer) gets the config's id, else EOS."""
    for name in ("bos", "eos", "unk"):
        if getattr(config, f"{name}_token", None) is None:
            token_id = getattr(model.config, f"{name}_token_id", None)
            if token_id is None:
                token_id = model.config.eos_token_id
            setattr(config, f"{name}_token", tokenizer.convert_ids_to_tokens(token_id))


def _check_pairs(
    model: nn.Module, n: int = 3, seed: int = 0, vocab: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """Fixed (source ids, target ids) pairs of ordinary tokens, source ending in EOS; ids below
    ``vocab`` (the tokenizer's size: an embedding can be larger, t5-base's by 28 rows, and ids
    without a token cannot be passed to CTranslate2)."""
    cfg = model.config
    eos = cfg.eos_token_id
    special = {
        cfg.pad_token_id,
        eos,
        getattr(cfg, "bos_token_id", None),
        cfg.decoder_start_token_id,
    }
    vocab = min(vocab or 1 << 62, model.get_input_embeddings().num_embeddings)
    pool = torch.tensor([i for i in range(vocab) if i not in special])
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for k in range(n):
        src = pool[torch.randint(len(pool), (9 + 3 * k,), generator=g)].tolist() + [eos]
        tgt = pool[torch.randint(len(pool), (5 + k,), generator=g)].tolist()
        pairs.append((src, tgt))
    return pairs


def torch_log_probs(model: nn.Module, src: list[int], tgt: list[int]) -> list[float]:
    """Per-token log-probabilities of ``tgt`` + EOS given ``src`` (teacher forcing)."""
    cfg = model.config
    labels = torch.tensor([tgt + [cfg.eos_token_id]])
    dec_in = torch.tensor([[cfg.decoder_start_token_id] + tgt])
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([src]), decoder_input_ids=dec_in).logits.float()
    lp = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return lp[0].tolist()


def check_conversion(model: nn.Module, tokenizer, ct2_dir: str | Path) -> float:
    """Max |d log-prob| between ``model`` (PyTorch, float32) and the float32 CTranslate2
    model in ``ct2_dir`` on :func:`_check_pairs`."""
    pairs = _check_pairs(model, vocab=len(tokenizer))
    tok = tokenizer.convert_ids_to_tokens
    try:
        translator = _ct2().Translator(str(ct2_dir), device="cpu", compute_type="float32")
        results = translator.score_batch([tok(s) for s, _ in pairs], [tok(t) for _, t in pairs])
    except (RuntimeError, ValueError) as exc:
        raise NotExpressible(RUNTIME, f"the converted model does not run ({exc})") from exc
    worst = 0.0
    for (src, tgt), res in zip(pairs, results):
        ref = torch_log_probs(model, src, tgt)
        if len(res.log_probs) != len(ref):
            return float("inf")
        worst = max(worst, max(abs(a - b) for a, b in zip(res.log_probs, ref)))
    return worst


def _shape_facts(model: nn.Module) -> dict:
    """What the benchmark reports about a model, recorded for the converted one."""
    cfg = model.config
    seen = {id(p): p.numel() for p in model.parameters()}
    return {
        "params": int(sum(seen.values())),
        "model_type": getattr(cfg, "model_type", None),
        "encoder_layers": getattr(cfg, "num_layers", getattr(cfg, "encoder_layers", None)),
        "decoder_layers": getattr(cfg, "num_decoder_layers", getattr(cfg, "decoder_layers", None)),
    }


def _token_ids(model: nn.Module) -> dict:
    gen = getattr(model, "generation_config", None)
    return {k: getattr(gen, k, None) for k in _TOKEN_IDS}


def convert(
    model_dir: str | Path,
    out_dir: str | Path,
    quantization: str = "int8",
    *,
    tolerance: float = TOLERANCE,
) -> Path:
    """Convert the model directory ``model_dir`` into a CTranslate2 directory ``out_dir``.

    ``quantization`` is CTranslate2's weight type (``int8``, ``float32``, ``int8_bfloat16``...).
    The float32 conversion is checked against PyTorch first (``tolerance`` on per-token
    log-probs); the result holds model.bin, the vocabulary, the HF tokenizer (``hf_tokenizer/``)
    and ``nash_runtime.json`` (source, quantisation, check result, token ids). Raises
    :class:`NotExpressible` when CTranslate2 cannot express the model or the check fails.
    """
    if quantization not in QUANTIZATIONS:
        raise ModelError(
            f"unknown CTranslate2 quantization '{quantization}': one of {QUANTIZATIONS}"
        )
    _ct2()
    from nash_core.loading import load_seq2seq

    started = time.perf_counter()
    model, tokenizer = load_seq2seq(model_dir, device=torch.device("cpu"))
    return convert_model(
        model,
        tokenizer,
        out_dir,
        quantization,
        tolerance=tolerance,
        source=str(Path(model_dir).resolve()),
        started=started,
    )


def convert_model(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    quantization: str = "int8",
    *,
    tolerance: float = TOLERANCE,
    source: str = "",
    started: float | None = None,
) -> Path:
    """:func:`convert` for a model already in memory (``model`` is not modified)."""
    started = time.perf_counter() if started is None else started
    model = model.float().eval()
    padded = padded_for_ct2(model)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.check-", dir=out.parent) as check:
        spec = _spec(padded, tokenizer)
        spec.optimize(quantization="float32")
        spec.save(check)
        worst = check_conversion(model, tokenizer, check)
    if not worst <= tolerance:
        raise NotExpressible(
            RUNTIME,
            f"the conversion of {source or 'the model'} failed its check: per-token log-probs "
            f"differ from PyTorch by up to {worst:.3g} (tolerance {tolerance:g})",
        )
    with atomic_dir(out) as tmp:
        spec = _spec(padded, tokenizer)
        spec.optimize(quantization=quantization)
        spec.save(str(tmp))
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        atomic_write_json(
            tmp / META_FILE,
            {
                "runtime": "ctranslate2",
                "source": source,
                "quantization": quantization,
                "check_max_abs_logprob_diff": worst,
                "check_tolerance": tolerance,
                "padded": padded is not model,
                "token_ids": _token_ids(model),
                **_shape_facts(model),
                "ctranslate2_version": _ct2().__version__,
                "convert_seconds": round(time.perf_counter() - started, 3),
            },
        )
    return out


def is_ct2_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / META_FILE).is_file() and (p / "model.bin").is_file()


# --------------------------------------------------------------------------- generation
def decode_options(eval_cfg, fixed_new_tokens: int | None = None) -> dict:
    """``translate_batch`` keywords for the shared decoding protocol
    (:func:`nash_core.evaluate.generation_config_for`): greedy / beam search, new-token bounds
    (EOS counts, as in ``generate``), length penalty, no-repeat n-gram."""
    return _options(
        eval_cfg.num_beams,
        fixed_new_tokens or eval_cfg.max_new_tokens,
        fixed_new_tokens or eval_cfg.min_new_tokens,
        eval_cfg.length_penalty,
        eval_cfg.no_repeat_ngram_size,
    )


class CT2Generator:
    """A converted directory loaded in CTranslate2, generating like the PyTorch path.

    ``compute_type`` defaults to the directory's quantisation; ``intra_threads`` are the
    threads of one translation, ``inter_threads`` the translations run in parallel.
    """

    def __init__(
        self,
        ct2_dir: str | Path,
        device: str = "cpu",
        compute_type: str | None = None,
        intra_threads: int = 1,
        inter_threads: int = 1,
    ):
        from transformers import AutoTokenizer

        self.dir = Path(ct2_dir)
        if not is_ct2_dir(self.dir):
            raise ModelError(f"{self.dir} is not a converted CTranslate2 model (no {META_FILE})")
        self.meta = read_json(self.dir / META_FILE)
        self.compute_type = compute_type or self.meta["quantization"]
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dir / TOKENIZER_DIR))
        self.intra_threads, self.inter_threads = intra_threads, inter_threads
        # CTranslate2 and torch share the process's OpenMP runtime: building a Translator sets
        # the calling thread's OpenMP thread count to intra_threads, and every later torch op in
        # that thread (a PyTorch candidate timed in the same benchmark) would run on that many.
        torch_threads = torch.get_num_threads()
        self.translator = _ct2().Translator(
            str(self.dir),
            device=device,
            compute_type=self.compute_type,
            intra_threads=intra_threads,
            inter_threads=inter_threads,
        )
        torch.set_num_threads(torch_threads)
        ids = self.meta["token_ids"]
        bos = ids.get("forced_bos_token_id")
        self.prefix = None if bos is None else self.tokenizer.convert_ids_to_tokens(bos)

    def source_tokens(self, sources: Sequence[str], max_source_length: int | None = None):
        enc = self.tokenizer(
            list(sources),
            truncation=max_source_length is not None,
            max_length=max_source_length,
        )
        return [self.tokenizer.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]

    def translate_tokens(self, tokens: list[list[str]], options: dict) -> list[list[str]]:
        prefix = None if self.prefix is None else [[self.prefix]] * len(tokens)
        results = self.translator.translate_batch(tokens, target_prefix=prefix, **options)
        return [r.hypotheses[0] for r in results]

    def generate_with_lengths(
        self, sources: Sequence[str], eval_cfg, max_source_length: int | None = None
    ) -> tuple[list[str], list[int]]:
        options = decode_options(eval_cfg)
        texts: list[str] = []
        lengths: list[int] = []
        bs = eval_cfg.batch_size
        for start in range(0, len(sources), bs):
            tokens = self.source_tokens(sources[start : start + bs], max_source_length)
            for hyp in self.translate_tokens(tokens, options):
                ids = self.tokenizer.convert_tokens_to_ids(hyp)
                texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
                lengths.append(len(hyp))
        return texts, lengths

    def generate(
        self, sources: Sequence[str], eval_cfg, max_source_length: int | None = None
    ) -> list[str]:
        return self.generate_with_lengths(sources, eval_cfg, max_source_length)[0]

    def log_probs(self, src: list[int], tgt: list[int]) -> list[float]:
        """Per-token log-probabilities of ``tgt`` + EOS given ``src`` (ids)."""
        tok = self.tokenizer.convert_ids_to_tokens
        return list(self.translator.score_batch([tok(src)], [tok(tgt)])[0].log_probs)


# --------------------------------------------------------------------------- as a "model"
class CT2Model:
    """A converted directory behind the slice of the transformers model interface that
    evaluation, benchmarks and the served pyfunc use: ``generate(input_ids, attention_mask,
    generation_config=...)`` returning ``[start] + new ids`` rows padded with the pad id (EOS
    counted by ``generated_lengths`` as for PyTorch), ``generation_config`` (token ids),
    ``get_encoder()`` and :meth:`facts`. So one code path measures both runtimes.

    ``get_encoder()`` times the encoder plus ONE decoding step (CTranslate2's translator has no
    encoder-only call); threads default to the setting measured at conversion time
    (``nash_runtime.json["threads"]``), else 1.
    """

    def __init__(
        self,
        ct2_dir: str | Path,
        device: str | torch.device = "cpu",
        intra_threads: int | None = None,
        inter_threads: int | None = None,
    ):
        import psutil
        from transformers import GenerationConfig

        meta = read_json(Path(ct2_dir) / META_FILE) if is_ct2_dir(ct2_dir) else {}
        threads = meta.get("threads") or {}
        self.device = torch.device(device)
        rss = psutil.Process().memory_info().rss
        self.gen = CT2Generator(
            ct2_dir,
            device=self.device.type,
            intra_threads=intra_threads or threads.get("intra_threads", 1),
            inter_threads=inter_threads or threads.get("inter_threads", 1),
        )
        self.load_rss_mb = (psutil.Process().memory_info().rss - rss) / 2**20
        self.tokenizer, self.meta, self.dir = self.gen.tokenizer, self.gen.meta, Path(ct2_dir)
        ids = {k: v for k, v in self.meta["token_ids"].items() if v is not None}
        self.generation_config = GenerationConfig(**ids)
        self.config = _Facts(vocab_size=len(self.tokenizer), model_type="ctranslate2")

    def eval(self):
        return self

    def parameters(self):
        return iter([torch.empty(0, device=self.device)])

    def generate(self, input_ids, attention_mask=None, generation_config=None, **_):
        g = generation_config or self.generation_config
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        tok = self.tokenizer.convert_ids_to_tokens
        sources = [tok(row[m.bool()].tolist()) for row, m in zip(input_ids.cpu(), mask.cpu())]
        options = _options(
            g.num_beams,
            g.max_new_tokens,
            g.min_new_tokens,
            g.length_penalty,
            g.no_repeat_ngram_size,
        )
        hyps = [
            self.tokenizer.convert_tokens_to_ids(h)
            for h in self.gen.translate_tokens(sources, options)
        ]
        pad = g.pad_token_id if g.pad_token_id is not None else 0
        out = torch.full((len(hyps), 1 + max([len(h) for h in hyps] + [0])), pad)
        out[:, 0] = g.decoder_start_token_id if g.decoder_start_token_id is not None else pad
        for i, h in enumerate(hyps):
            out[i, 1 : 1 + len(h)] = torch.tensor(h, dtype=torch.long)
        return out

    def get_encoder(self):
        def encode(input_ids, attention_mask=None, **_):
            one = GenerationConfigLike(self.generation_config, max_new_tokens=1)
            return self.generate(input_ids, attention_mask, one)

        return encode

    def facts(self) -> dict:
        disk = sum(f.stat().st_size for f in self.dir.rglob("*") if f.is_file()) / 2**20
        weights = (self.dir / "model.bin").stat().st_size / 2**20
        return {
            "params": self.meta.get("params"),
            "weights_mb": weights,
            "disk_mb": disk,
            "load_rss_mb": self.load_rss_mb,
            "dtype": self.gen.compute_type,
            "attn_implementation": "ctranslate2",
            "model_type": self.meta.get("model_type", "ctranslate2"),
            "encoder_layers": self.meta.get("encoder_layers"),
            "decoder_layers": self.meta.get("decoder_layers"),
            "runtime": "ctranslate2",
            "intra_threads": self.gen.intra_threads,
            "inter_threads": self.gen.inter_threads,
        }


class _Facts(dict):
    __getattr__ = dict.get


def GenerationConfigLike(base, **update):  # noqa: N802  (reads like the class it copies)
    import copy as _copy

    g = _copy.deepcopy(base)
    for k, v in update.items():
        setattr(g, k, v)
    g.min_new_tokens = min(g.min_new_tokens or 0, g.max_new_tokens)
    return g


def _options(num_beams, max_new, min_new, length_penalty, no_repeat) -> dict:
    return dict(
        beam_size=num_beams or 1,
        max_decoding_length=max_new,
        min_decoding_length=min_new or 0,
        length_penalty=1.0 if length_penalty is None else length_penalty,
        no_repeat_ngram_size=no_repeat or 0,
        return_end_token=True,
        max_input_length=0,  # the tokenizer truncates, as on the PyTorch path
    )


def choose_threads(
    ct2_dir: str | Path,
    texts: Sequence[str],
    eval_cfg,
    batch_sizes: Sequence[int] = (1, 8),
    max_source_length: int | None = None,
    rounds: int = 3,
) -> dict:
    """Time ``texts`` at each batch size with one thread and with every core (intra-op), keep
    the faster (sum of medians over the batch sizes) and record it in ``nash_runtime.json``
    ``["threads"]``, which :class:`CT2Model` (benchmarks, the served model) then uses.

    On this project's 2-core machines one thread per model was up to 20x faster than two (the
    wheel's OpenMP threads spin and fight): measure, never assume.
    """
    import os

    cores = os.cpu_count() or 1
    gen_cfg = eval_cfg.model_copy(update={"batch_size": max(batch_sizes)})
    timings: dict[str, dict[str, float]] = {}
    for intra in sorted({1, cores}):
        model = CT2Model(ct2_dir, intra_threads=intra, inter_threads=1)
        per_bs = {}
        for bs in batch_sizes:
            batch = list(texts[:bs]) or [""]
            model.gen.generate(batch, gen_cfg, max_source_length)  # warm-up
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                model.gen.generate(batch, gen_cfg, max_source_length)
                times.append(time.perf_counter() - t0)
            per_bs[str(bs)] = 1000.0 * sorted(times)[len(times) // 2]
        timings[str(intra)] = per_bs
        del model
    best = min(timings, key=lambda k: sum(timings[k].values()))
    threads = {"intra_threads": int(best), "inter_threads": 1, "median_ms": timings}
    meta_file = Path(ct2_dir) / META_FILE
    atomic_write_json(meta_file, {**read_json(meta_file), "threads": threads})
    return threads


# --------------------------------------------------------------------------- registry entry
#: precision name (a sweep variant is ``ct2-<precision>``) -> CTranslate2 weight and compute type
PRECISIONS = {
    "fp32": "float32",
    "int8": "int8",
    "int8-bf16": "int8_bfloat16",
    "bf16": "bfloat16",
    "fp16": "float16",
    "int8-fp16": "int8_float16",
}


def supported_compute_types(device: str) -> set[str]:
    try:
        return set(_ct2().get_supported_compute_types(device))
    except (RuntimeError, ValueError):  # e.g. "cuda" without a CUDA driver
        return set()


@register_runtime("ctranslate2")
class CTranslate2Runtime(Runtime):
    title = RUNTIME
    prefix = "ct2-"
    self_contained = True

    def refuses(self, arm) -> str | None:
        if arm.uses_hidden_mask:
            return (
                f"arm '{arm.label}' prunes the hidden dimension (CoFi's hidden mask), which "
                "CTranslate2's norms cannot express"
            )
        return None

    def prepare(self, model_dir: str | Path, out_dir: str | Path, precision: str = "int8") -> Path:
        return convert(model_dir, out_dir, PRECISIONS[precision])

    def generator(self, prepared_dir: str | Path, device: str = "cpu", **options):
        return CT2Generator(prepared_dir, device=device, **options)

    def compute_types(self, device: str) -> list[str]:
        have = supported_compute_types(device)
        # "int8" on CPU runs as int8_float32 (what get_supported_compute_types names it)
        return [p for p, ct in PRECISIONS.items() if ct in have]


def describe(ct2_dir: str | Path) -> str:
    return json.dumps(read_json(Path(ct2_dir) / META_FILE), sort_keys=True)
