"""Save and load pruned models as self-describing Hugging Face directories.

An export is a normal ``save_pretrained`` directory (safetensors + tokenizer) whose config.json
carries ``"nash"``: what was kept (decoder layers by original index, encoder heads by original
index, FFN widths), how (method, target, teacher), and the per-layer ``shapes`` that
``modeling_nash.py`` (copied next to the weights, referenced by ``auto_map``) needs to rebuild
the modules. So anyone can load it with plain transformers:

    AutoModelForSeq2SeqLM.from_pretrained(dir, trust_remote_code=True)

and nash_core loads it with :func:`load_exported` through the very same class. A model whose
shapes are unchanged (sft: fewer decoder layers only) is saved as a plain HF directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from nash_core.errors import ModelError
from nash_core.export_modeling import modeling_nash
from nash_core.io import atomic_dir, atomic_write_json, read_json

MODELING_FILE = Path(modeling_nash.__file__)


def export_summary(model: nn.Module) -> dict:
    """What was kept, in original indices: decoder layers, encoder heads, encoder FFN widths
    (and the hidden width when CoFi's hidden-dimension mask pruned it)."""
    shapes = getattr(model.config, "nash", {}).get("shapes")
    decoder_kept = getattr(model.config, "nash_decoder_layers_kept", None)
    summary = {"decoder_layers_kept": decoder_kept}
    if shapes is None:
        return summary
    summary["encoder_heads_kept"] = [layer["self"] or [] for layer in shapes["encoder"]]
    summary["encoder_ffn_dims"] = [layer["ffn"] or 0 for layer in shapes["encoder"]]
    if "hidden" in shapes:  # CoFi's hidden-dimension mask: the residual width kept
        summary["hidden_dims_kept"] = shapes["hidden"]["kept"]
    return summary


def save_exported(model: nn.Module, tokenizer, out_dir: str | Path, nash_meta: dict) -> Path:
    """Write ``model`` + ``tokenizer`` to ``out_dir`` atomically; returns ``out_dir``.

    ``nash_meta`` (method, target, teacher, ...) is merged into config.json["nash"]. A model
    restructured by :func:`nash_core.materialize.materialize_masks` also gets ``modeling_nash.py``
    and an ``auto_map`` entry; an unpruned-shape model is a plain HF directory plus the metadata.
    """
    out_dir = Path(out_dir)
    shapes = getattr(model.config, "nash", {}).get("shapes")
    nash = {**export_summary(model), **nash_meta}
    config = model.config
    previous = {k: getattr(config, k, None) for k in ("nash", "auto_map", "architectures")}
    try:
        if shapes is not None:
            family = shapes["family"]
            cls_name = modeling_nash.EXPORT_CLASSES[family].__name__
            nash["shapes"] = shapes
            config.auto_map = {"AutoModelForSeq2SeqLM": f"modeling_nash.{cls_name}"}
        config.nash = nash
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            if shapes is not None:
                shutil.copyfile(MODELING_FILE, tmp / "modeling_nash.py")
                # save_pretrained names the in-process class (a stock one after materialise)
                written = read_json(tmp / "config.json")
                written["architectures"] = [cls_name]
                atomic_write_json(tmp / "config.json", written)
    finally:
        for key, value in previous.items():
            setattr(config, key, value)
    return out_dir


def load_exported(path: str | Path, attn: str | None = None):
    """``(model, tokenizer)`` from an export directory, in eval mode, without remote code.

    Uses nash_core's copy of ``modeling_nash`` (identical to the shipped file).
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path} is not a model export: config.json is missing")
    nash = json.loads(config_file.read_text(encoding="utf-8")).get("nash", {})
    kwargs = {"use_safetensors": True}
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        if "shapes" in nash:
            config = AutoConfig.from_pretrained(str(path))
            cls = modeling_nash.EXPORT_CLASSES[nash["shapes"]["family"]]
            model = cls.from_pretrained(str(path), config=config, **kwargs)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(str(path), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"cannot load the pruned export {path} ({type(exc).__name__}: {exc}); "
            "re-run the materialise step to rewrite it"
        ) from exc
    return model.eval(), tokenizer
