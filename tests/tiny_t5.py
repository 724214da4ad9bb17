"""THE tiny T5 of the tests: one config factory, so a test states only how its model differs.

Defaults: 32-wide, 2 + 2 layers, 4 heads of 8, FFN 64, pad 0 / eos 1 / decoder start 0 (the demo
word-level tokenizer's ids). Everything else is T5Config's default unless a test overrides it
(``dropout_rate``, ``relative_attention_num_buckets``, ``feed_forward_proj``, ...)."""

from __future__ import annotations

import torch
from transformers import T5Config, T5ForConditionalGeneration

BASE = dict(
    d_model=32,
    d_ff=64,
    d_kv=8,
    num_heads=4,
    num_layers=2,
    num_decoder_layers=2,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)


def tiny_t5_config(vocab_size: int, **overrides) -> T5Config:
    return T5Config(vocab_size=vocab_size, **{**BASE, **overrides})


def tiny_t5(vocab_size: int, seed: int | None = 0, **overrides) -> T5ForConditionalGeneration:
    """A random tiny T5 (``torch.manual_seed(seed)`` first unless ``seed`` is None)."""
    if seed is not None:
        torch.manual_seed(seed)
    return T5ForConditionalGeneration(tiny_t5_config(vocab_size, **overrides))
