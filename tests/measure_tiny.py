"""Tiny saved models, test splits and a fake timed model for the evaluation/benchmark tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_t5 import tiny_t5_config
from transformers import GenerationConfig, T5ForConditionalGeneration

from nash_core.base_model import build_demo_tokenizer

ROWS = [
    {
        "source": "anna: can we meet at the cafe on monday? bob: yes, at noon.",
        "target": "anna and bob meet at the cafe on monday at noon.",
    },
    {
        "source": "carl: the delivery is late. dana: it arrives on friday then.",
        "target": "the delivery arrives on friday.",
    },
    {
        "source": "eve: dinner moves to tuesday. finn: fine, see you at the station.",
        "target": "dinner moves to tuesday. eve and finn meet at the station.",
    },
    {
        "source": "gus: i cancelled the trip to the park. hana: ok, stay home.",
        "target": "gus cancelled the trip to the park.",
    },
    {
        "source": "ivy: the office opens early on monday. jon: i will be there at eight.",
        "target": "jon will be at the office at eight on monday.",
    },
]


def write_splits(splits_dir: Path, rows=ROWS) -> Path:
    splits_dir.mkdir(parents=True, exist_ok=True)
    (splits_dir / "test.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    return splits_dir


def save_tiny_t5(
    out_dir: Path, enc: int = 2, dec: int = 2, seed: int = 0, d_model: int = 32
) -> Path:
    """A random tiny T5 + the demo word-level tokenizer, saved like every model dir we write."""
    tok = build_demo_tokenizer([t for r in ROWS for t in (r["source"], r["target"])], out_dir)
    cfg = tiny_t5_config(
        len(tok),
        d_model=d_model,
        d_ff=2 * d_model,
        num_layers=enc,
        num_decoder_layers=dec,
        dropout_rate=0.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        relative_attention_num_buckets=8,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(cfg).eval()
    model.generation_config.decoder_start_token_id = tok.pad_token_id
    model.save_pretrained(str(out_dir))
    return out_dir


class FakeClock:
    """A clock that only moves when a fake model 'works'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000.0


class FakeModel:
    """Stands in for a seq2seq model with exactly known latency (in fake milliseconds).

    encoder call: ``enc_ms``; generate: ``enc_ms + steps * step_ms`` where steps is the number
    of new tokens (``natural_len`` capped by max_new_tokens, raised to min_new_tokens); the
    first ``slow_first`` calls of generate cost ``slow_ms`` extra (warm-up effects).
    """

    PAD, EOS, START, TOKEN = 0, 1, 0, 7

    def __init__(
        self,
        clock: FakeClock,
        enc_ms: float,
        step_ms: float,
        natural_len: int = 5,
        slow_first: int = 0,
        slow_ms: float = 0.0,
        name: str = "m",
        log: list | None = None,
        len_from_input: bool = False,
    ):
        self.clock, self.enc_ms, self.step_ms = clock, enc_ms, step_ms
        self.len_from_input = len_from_input  # natural length = the first row's first token id
        self.natural_len, self.slow_first, self.slow_ms = natural_len, slow_first, slow_ms
        self.name, self.log, self.calls = name, log if log is not None else [], 0
        self.generation_config = GenerationConfig(
            decoder_start_token_id=self.START, pad_token_id=self.PAD, eos_token_id=self.EOS
        )

    def get_encoder(self):
        def encode(input_ids, attention_mask):
            self.clock.advance(self.enc_ms)
            self.log.append((self.name, "encoder"))

        return encode

    def generate(self, input_ids, attention_mask, generation_config, **kwargs):
        gc = generation_config
        natural = int(input_ids[0, 0]) if self.len_from_input else self.natural_len
        steps = max(min(natural, gc.max_new_tokens), gc.min_new_tokens or 0)
        extra = self.slow_ms if self.calls < self.slow_first else 0.0
        self.calls += 1
        self.clock.advance(self.enc_ms + steps * self.step_ms + extra)
        self.log.append((self.name, "generate"))
        out = torch.full((input_ids.shape[0], steps + 1), self.TOKEN)
        out[:, 0] = self.START
        if steps == natural:  # stopped by EOS
            out[:, -1] = self.EOS
        return out
