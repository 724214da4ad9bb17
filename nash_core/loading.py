"""Load any model directory this project writes (or a hub id) as ``(model, tokenizer)``.

One entry point so every stage loads models the same way: safetensors only (no pickle code
execution), ``trust_remote_code`` off unless the config asks for it, and pruned exports (whose
``config.json`` carries a ``"nash"`` key) routed to :func:`nash_core.export.load_exported`,
because their per-layer shapes cannot be expressed in a stock config.
"""

from __future__ import annotations

import json
from pathlib import Path

from nash_core.errors import ModelError


def _is_pruned_export(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and "nash" in json.loads(config.read_text(encoding="utf-8"))


def load_seq2seq(
    path: str | Path,
    device=None,
    attn: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """``(model, tokenizer)`` for a local HF directory, a pruned export or a hub id.

    ``attn`` picks the attention implementation (``"sdpa"``, ``"eager"``; default
    transformers'). The model is returned in eval mode on ``device`` (default CPU).
    """
    if _is_pruned_export(path):
        from nash_core.export import load_exported  # written by the pruning engine

        model, tokenizer = load_exported(path)
    else:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(
                str(path), use_safetensors=True, attn_implementation=attn, **kwargs
            )
            tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load model '{path}' ({type(exc).__name__}: {exc}). It must "
                "be a save_pretrained directory (or hub id) with safetensors weights "
                "and a tokenizer."
            ) from exc
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ModelError(
            f"model '{path}': the tokenizer has {len(tokenizer)} tokens but the model "
            f"embeds only {vocab}; the tokenizer does not belong to this model (save "
            "the matching tokenizer next to it)"
        )
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer
