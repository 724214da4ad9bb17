"""The ``pytorch`` runtime: the model directory as it is, run eagerly by transformers.

Precision variants (int8 dynamic quantisation, bf16 / fp16 casts) are marker directories written
by :func:`nash_core.quantize.quantize_dir`; ``fp32`` is the directory itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from nash_core.runtimes.base import Runtime, register_runtime


class PyTorchGenerator:
    """A loaded model + tokenizer that generates with the shared decoding protocol."""

    def __init__(self, model_dir: str | Path, device: str | torch.device | None = None):
        from nash_core.quantize import default_device, load_for_measurement

        self.device = default_device([model_dir]) if device is None else torch.device(device)
        self.model, self.tokenizer = load_for_measurement(model_dir, device=self.device)

    def generate_with_lengths(
        self, sources: Sequence[str], eval_cfg, max_source_length: int | None = None
    ) -> tuple[list[str], list[int]]:
        from nash_core.evaluate import _generate_batches

        texts: list[str] = []
        lengths: list[int] = []
        for t, n in _generate_batches(
            self.model, self.tokenizer, sources, eval_cfg, self.device, max_source_length
        ):
            texts += t
            lengths += n
        return texts, lengths

    def generate(
        self, sources: Sequence[str], eval_cfg, max_source_length: int | None = None
    ) -> list[str]:
        return self.generate_with_lengths(sources, eval_cfg, max_source_length)[0]


@register_runtime("pytorch")
class PyTorchRuntime(Runtime):
    title = "PyTorch"

    def prepare(self, model_dir: str | Path, out_dir: str | Path, precision: str = "fp32") -> Path:
        if precision == "fp32":
            return Path(model_dir)
        from nash_core.quantize import quantize_dir

        return quantize_dir(model_dir, out_dir, precision)

    def generator(self, prepared_dir: str | Path, device: str | None = None, **options):
        return PyTorchGenerator(prepared_dir, device)

    def compute_types(self, device: str) -> Sequence[str]:
        return ("fp32", "int8", "bf16") if device == "cpu" else ("fp32", "bf16", "fp16")
