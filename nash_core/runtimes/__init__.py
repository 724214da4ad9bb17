"""Serving runtimes, registered by name: how a candidate model is turned into something that
generates text, and how it generates.

- ``pytorch``: the model directory as it is, loaded by transformers and run eagerly (today's
  evaluation and benchmark path; precision variants are ``nash_core.quantize`` markers).
- ``ctranslate2``: the model converted to a CTranslate2 directory (pruned heads padded back at
  their original indices, removed sub-layers as zero projections) and run by CTranslate2's
  C++ kernels, see :mod:`nash_core.runtimes.ct2`.

A runtime is a :class:`~nash_core.runtimes.base.Runtime` subclass registered with
:func:`register_runtime`; everything else looks runtimes up with :func:`get_runtime`, never by
branching on their names.
"""

from __future__ import annotations

from nash_core.runtimes import ct2, pytorch  # noqa: E402,F401  (fill the registry)
from nash_core.runtimes.base import (
    RUNTIMES,
    NotExpressible,
    Runtime,
    get_runtime,
    refused_variants,
    register_runtime,
    runtime_names,
    split_variant,
)

__all__ = [
    "RUNTIMES",
    "NotExpressible",
    "Runtime",
    "get_runtime",
    "refused_variants",
    "register_runtime",
    "runtime_names",
    "split_variant",
]
