"""Tiny random encoder-decoder models and a word-level tokenizer for the pruning-engine tests."""

from __future__ import annotations

import torch
from tiny_t5 import tiny_t5_config
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5ForConditionalGeneration,
)

WORDS = (
    "alice bob meets carol at the cafe on monday tuesday noon dinner moves to friday "
    "cancelled delivery arrives late early park station office home"
).split()
VOCAB = ["<pad>", "</s>", "<unk>", "<s>"] + WORDS


def t5(
    gated: bool = False,
    enc: int = 2,
    dec: int = 3,
    d_model: int = 32,
    d_ff: int = 48,
    heads: int = 4,
    d_kv: int = 6,
    seed: int = 0,
    attn: str = "sdpa",
) -> T5ForConditionalGeneration:
    """T5 (relu) or T5 v1.1 (gated-gelu); d_kv * heads != d_model on purpose."""
    torch.manual_seed(seed)
    cfg = tiny_t5_config(
        len(VOCAB),
        d_model=d_model,
        d_ff=d_ff,
        d_kv=d_kv,
        num_heads=heads,
        num_layers=enc,
        num_decoder_layers=dec,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu" if gated else "relu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        relative_attention_num_buckets=8,
        tie_word_embeddings=not gated,
    )
    cfg._attn_implementation = attn
    return T5ForConditionalGeneration(cfg).eval()


def bart(
    enc: int = 2,
    dec: int = 3,
    d_model: int = 32,
    ffn: int = 48,
    heads: int = 4,
    seed: int = 0,
    attn: str = "sdpa",
) -> BartForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = BartConfig(
        vocab_size=len(VOCAB),
        d_model=d_model,
        encoder_layers=enc,
        decoder_layers=dec,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
        decoder_start_token_id=1,
        forced_eos_token_id=None,
    )
    cfg._attn_implementation = attn
    model = BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random biases so that bias accounting and folding are really exercised
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def batch(n: int = 3, src_len: int = 7, tgt_len: int = 5, seed: int = 1) -> dict:
    """Random ids with padding in the source and -100 padding in the labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, len(VOCAB), (n, src_len), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    ids[0, -2:] = 0
    labels = torch.randint(4, len(VOCAB), (n, tgt_len), generator=g)
    labels[1, -2:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def randomize_masks(masks, seed: int = 3, scale: float = 3.0, shift: float = 0.5) -> None:
    """Spread log_alpha so the deterministic masks drop some heads, units and sub-layers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for group in masks.groups.values():
            group.log_alpha.copy_(torch.randn(group.log_alpha.shape, generator=g) * scale + shift)


def dataset(n: int = 16, seed: int = 0) -> list[dict]:
    """In-memory tokenised examples (lists of ids) for train_seq2seq."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        src = torch.randint(
            4, len(VOCAB), (int(torch.randint(4, 9, (1,), generator=g)),), generator=g
        )
        tgt = src[:4].flip(0)
        rows.append(
            {
                "input_ids": src.tolist() + [1],
                "attention_mask": [1] * (len(src) + 1),
                "labels": tgt.tolist() + [1],
            }
        )
    return rows
