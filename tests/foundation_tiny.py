"""Tiny real models, tokenizers and SAMSum-shaped files for the foundation tests.

Models are saved with ``save_pretrained`` next to a tokenizer, which is exactly what a hub
user's cache holds minus the download.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_t5 import tiny_t5_config
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5ForConditionalGeneration,
)

from nash_core.base_model import build_demo_tokenizer
from nash_core.demo_corpus import generate_corpus


def samsum_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows in SAMSum's layout: id, dialogue, summary."""
    return [
        {"id": f"{seed}-{i}", "dialogue": r["source"], "summary": r["target"]}
        for i, r in enumerate(generate_corpus(n, seed))
    ]


def write_rows(rows: list[dict], path: Path) -> Path:
    """Write rows as jsonl / csv / parquet, chosen by the file extension."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def bpe_tokenizer(texts: list[str], out_dir: Path) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with BART's special tokens (<s> ... </s>)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.save_pretrained(str(out_dir))
    return fast


def save_t5(out_dir: Path, texts: list[str], dec_layers: int = 2, seed: int = 0) -> Path:
    """A tiny random T5 (relu) with the demo word-level tokenizer."""
    tok = build_demo_tokenizer(texts, out_dir)
    torch.manual_seed(seed)
    config = tiny_t5_config(len(tok), num_decoder_layers=dec_layers, dropout_rate=0.0)
    T5ForConditionalGeneration(config).save_pretrained(str(out_dir))
    return out_dir


def save_bart(out_dir: Path, texts: list[str], dec_layers: int = 3, seed: int = 0) -> Path:
    """A tiny random BART with a byte-level BPE tokenizer trained on ``texts``."""
    tok = bpe_tokenizer(texts, out_dir)
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=2,
        decoder_layers=dec_layers,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=512,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    BartForConditionalGeneration(config).save_pretrained(str(out_dir))
    return out_dir


def corpus_texts(n: int = 300) -> list[str]:
    return [t for r in generate_corpus(n, 0) for t in (r["source"], r["target"])]
