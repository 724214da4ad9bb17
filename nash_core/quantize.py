"""Post-pruning serving-precision variants of a model directory, without pickles: int8 dynamic
quantisation (CPU) and bf16 / fp16 casts (``benchmark.variants``).

A dynamically quantised model cannot be saved as safetensors, and ``torch.save`` of it is a
pickle, which we never load. So a "quantised model dir" is a small marker: ``nash_quantized.json``
naming the source model dir (relative and absolute path) and a content hash of its weights.
Loading re-applies ``quantize_dynamic`` to the source model; it takes well under a second for
small models and is deterministic (per-tensor scales come from the weights), so evaluation and
benchmarking see the same model every time. A bf16 / fp16 variant is the same kind of marker
(method ``cast-bfloat16`` / ``cast-float16``): loading casts the source's floating tensors.

API: ``torch.ao.quantization.quantize_dynamic`` (nn.Linear -> int8 weights, activations
quantised on the fly). torch 2.13 still ships it and it works; it warns that torch.ao.quantization
is deprecated in favour of torchao's ``quantize_``. We silence exactly that warning; moving to
torchao is the upgrade path once torch drops the API.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from nash_core.errors import ModelError
from nash_core.io import atomic_dir, atomic_write_json, read_json

MARKER = "nash_quantized.json"
METHOD = "dynamic-int8-linear"
#: Serving-precision variants (``benchmark.variants``) -> marker method. A cast variant is the
#: source model with every floating tensor in that dtype (weights and activations).
VARIANT_METHODS = {"int8": METHOD, "bf16": "cast-bfloat16", "fp16": "cast-float16"}
CAST_DTYPES = {"cast-bfloat16": torch.bfloat16, "cast-float16": torch.float16}


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear by an int8 dynamic-quantised Linear (CPU kernels only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.cpu().float().eval(), {nn.Linear}, dtype=torch.qint8)


def weights_hash(model_dir: str | Path) -> str:
    """Content hash of a model dir's config and weight files (what quantisation depends on)."""
    d = Path(model_dir)
    h = hashlib.sha256()
    for f in sorted(
        p for p in d.iterdir() if p.suffix == ".safetensors" or p.name == "config.json"
    ):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def is_quantized_dir(path: str | Path) -> bool:
    """A variant marker dir (int8 or a cast precision)."""
    return (Path(path) / MARKER).is_file()


def marker_method(path: str | Path) -> str | None:
    """The marker's method (``dynamic-int8-linear``, ``cast-bfloat16``...), None if no marker."""
    return read_json(Path(path) / MARKER).get("method") if is_quantized_dir(path) else None


def is_int8_dir(path: str | Path) -> bool:
    return marker_method(path) == METHOD


def quantize_dir(src_dir: str | Path, out_dir: str | Path, variant: str = "int8") -> Path:
    """Write the variant marker (int8 by default; ``bf16`` / ``fp16`` casts) for ``src_dir``
    into ``out_dir`` (atomically).

    Checks once that the source loads and converts, so a bad source fails here, not later.
    """
    if variant not in VARIANT_METHODS:
        raise ModelError(f"unknown variant '{variant}': expected one of {list(VARIANT_METHODS)}")
    method = VARIANT_METHODS[variant]
    src = Path(src_dir).resolve()
    if not (src / "config.json").is_file():
        raise ModelError(f"cannot quantise {src}: no config.json (expected a saved model dir)")
    model, _ = _load_source(src)
    if method == METHOD:
        quantize_dynamic_int8(model)
    else:
        model.to(CAST_DTYPES[method])
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        atomic_write_json(
            tmp / MARKER,
            {
                "method": method,
                "source_relative": os.path.relpath(src, out.resolve()),
                "source_absolute": str(src),
                "source_weights_hash": weights_hash(src),
                "torch_version": torch.__version__,
            },
        )
    return out


def _source_of(qdir: Path) -> Path:
    meta = read_json(qdir / MARKER)
    if meta.get("method") not in VARIANT_METHODS.values():
        raise ModelError(f"{qdir / MARKER}: unknown quantisation method {meta.get('method')!r}")
    for cand in ((qdir / meta["source_relative"]).resolve(), Path(meta["source_absolute"])):
        if (cand / "config.json").is_file():
            if weights_hash(cand) != meta["source_weights_hash"]:
                raise ModelError(
                    f"the source model {cand} of the quantised model {qdir} has changed "
                    "since it was quantised; run quantize_dir again"
                )
            return cand
    raise ModelError(
        f"the source model of the quantised model {qdir} is gone (looked in "
        f"{meta['source_relative']} and {meta['source_absolute']}); keep them together"
    )


def _load_source(src: Path):
    from nash_core.loading import load_seq2seq

    return load_seq2seq(src, device=torch.device("cpu"))


def load_quantized(qdir: str | Path, device=None) -> tuple[nn.Module, object]:
    """(model, tokenizer) for a dir written by :func:`quantize_dir`: int8 on CPU, or the cast
    precision on ``device`` (default CPU)."""
    model, tokenizer = _load_source(_source_of(Path(qdir)))
    method = marker_method(qdir)
    if method == METHOD:
        return quantize_dynamic_int8(model), tokenizer
    return model.to(device or "cpu", dtype=CAST_DTYPES[method]).eval(), tokenizer


def default_device(model_dirs) -> torch.device:
    """CPU when any of ``model_dirs`` is int8-quantised (CPU kernels only; a benchmark compares
    all its models on one device), else CUDA when torch sees one."""
    from nash_core.runtime import pick_device

    return torch.device("cpu") if any(is_int8_dir(d) for d in model_dirs) else pick_device("auto")


def load_for_measurement(model_dir: str | Path, device=None, dtype: torch.dtype | None = None):
    """Load any model dir we evaluate or benchmark: quantised markers, plain HF dirs, exports.

    A CTranslate2 directory (``nash_core.runtimes.ct2``) loads as a :class:`CT2Model` that
    generates through CTranslate2. Quantised models run on CPU in their own mixed precision:
    ``device`` cuda or a ``dtype`` other than float32 is refused rather than silently ignored.
    Cast variants (bf16, fp16) run in their own dtype on ``device`` (fp16: CUDA only).
    """
    from nash_core.runtimes.ct2 import CT2Model, is_ct2_dir

    if is_ct2_dir(model_dir):  # a CTranslate2 conversion: its own precision and threads
        model = CT2Model(model_dir, device=device or "cpu")
        return model, model.tokenizer
    method = marker_method(model_dir)
    if method in CAST_DTYPES:  # the marker's precision, whatever ``dtype`` says
        if method == "cast-float16" and (device is None or torch.device(device).type != "cuda"):
            raise ModelError(f"{model_dir} is an fp16 variant: it is served on CUDA only")
        return load_quantized(model_dir, device)
    if method is not None:
        if (device is not None and torch.device(device).type != "cpu") or dtype not in (
            None,
            torch.float32,
        ):
            raise ModelError(
                f"{model_dir} is int8 dynamic-quantised: it runs on CPU in float32 "
                "only (use --device cpu / dtype float32)"
            )
        return load_quantized(model_dir)
    from nash_core.loading import load_seq2seq

    model, tokenizer = load_seq2seq(model_dir, device=device)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), tokenizer
