"""The base model a sweep starts from: the offline demo T5, or a hub / local checkpoint.

``model.base`` decides:

- ``demo``: build a word-level tokenizer from the demo train split and a randomly initialised
  ``T5ForConditionalGeneration`` from ``model.demo``, saved as a normal HF directory (so every
  later stage loads it like any other model);
- a local directory: must hold a supported config, safetensors weights that are not truncated,
  and a tokenizer;
- anything else is a hub id: only its config is read (the weights are downloaded by the teacher
  stage, which needs them anyway).

The architecture is checked here, before anything trains, because pruning supports only T5/mT5
and BART (:mod:`nash_core.adapters`). :func:`fingerprint_base` identifies the exact weights so
that cached stages are invalidated when the base changes: the resolved hub commit, a content hash
of a local directory, or a hash of the demo recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from nash_core.config import DataConfig, ModelConfig
from nash_core.errors import ModelError
from nash_core.io import atomic_dir, atomic_write_json

SUPPORTED_TYPES = ("t5", "mt5", "bart")
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")


@dataclass(frozen=True)
class BaseInfo:
    """Where the base model is and what it is; plain data, so tasks can pass it as a dict."""

    path: str  # local directory or hub id, as from_pretrained takes it
    revision: str | None  # hub revision (None for local and demo)
    model_type: str  # t5 / mt5 / bart
    num_decoder_layers: int
    fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- demo tokenizer
def build_demo_tokenizer(texts, out_dir: str | Path, vocab_size: int = 1000):
    """Train a lower-cased word-level tokenizer on ``texts`` and save it as an HF tokenizer.

    Words and single punctuation marks are tokens; a "▁" marks a preceding space (as in
    SentencePiece), so decoding restores the text exactly up to case and whitespace runs
    ("anna's car broke down."). Every encoded text ends with ``</s>``. The result loads with
    ``AutoTokenizer.from_pretrained(out_dir)``.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(r"[^\w▁]"), behavior="isolated"),
        ]
    )
    tok.train_from_iterator(
        texts,
        trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
        ),
    )
    eos_id = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(out_dir))
    return fast


# --------------------------------------------------------------------------- fingerprints
def _kind(base: str) -> str:
    if base == "demo":
        return "demo"
    if Path(base).expanduser().is_dir():
        return "local"
    if base.startswith(("/", "./", "../", "~")):
        raise ModelError(f"model.base: local directory '{base}' does not exist")
    return "hub"


def _demo_recipe_hash(
    model_cfg: ModelConfig, data_cfg: DataConfig | None, splits_fp: str, seed: int
) -> str:
    recipe = {
        "model.demo": model_cfg.demo.model_dump(mode="json"),
        "seed": seed,
        "data.demo": data_cfg.demo.model_dump(mode="json") if data_cfg else None,
        "splits": splits_fp,
        "format": 1,
    }  # bump "format" when _build_demo changes
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _hash_local_dir(path: Path) -> str:
    """sha256 over the config, weight and tokenizer files (names and bytes), in name order."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".model", ".txt", ".py")):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _hub_commit(repo: str, revision: str | None) -> str:
    """The commit sha a hub revision resolves to (online), or the cached snapshot's (offline)."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    import huggingface_hub
    from huggingface_hub.utils import HfHubHTTPError, OfflineModeIsEnabled

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")
    if not offline:
        try:
            return huggingface_hub.HfApi().model_info(repo, revision=revision).sha
        except (HfHubHTTPError, OfflineModeIsEnabled, OSError):
            pass  # fall back to what is cached
    try:
        snap = huggingface_hub.snapshot_download(repo, revision=revision, local_files_only=True)
        return Path(snap).name
    except Exception as exc:
        raise ModelError(
            f"model.base '{repo}': cannot resolve revision '{revision or 'main'}' to a commit: the "
            "hub is unreachable (or HF_HUB_OFFLINE is set) and the model is not in the local "
            "Hugging Face cache. Go online once, or set model.revision to a full commit sha."
        ) from exc


def fingerprint_base(
    model_cfg: ModelConfig,
    path: str | Path,
    *,
    data_cfg: DataConfig | None = None,
    splits_fp: str = "",
    seed: int = 0,
) -> str:
    """Identify the base weights: hub commit sha, local content hash, or demo recipe hash."""
    kind = _kind(model_cfg.base)
    if kind == "demo":
        return _demo_recipe_hash(model_cfg, data_cfg, splits_fp, seed)
    if kind == "local":
        return _hash_local_dir(Path(path))
    return _hub_commit(str(path), model_cfg.revision)


# --------------------------------------------------------------------------- checks
def _check_safetensors(file: Path) -> None:
    """Parse the header and check the file is exactly as long as the header says."""
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(n))
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
        if 8 + n + end != size:
            raise ValueError(f"file has {size} bytes, header describes {8 + n + end}")
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(
            f"weights file {file} is corrupted or truncated ({exc}); re-save the "
            "model with save_pretrained or download it again"
        ) from exc


def _check_local_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model.base: '{path}' has no config.json; expected a directory written "
            "by save_pretrained"
        )
    if (path / "model.safetensors.index.json").is_file():
        index = json.loads((path / "model.safetensors.index.json").read_text())
        shards = sorted(set(index.get("weight_map", {}).values()))
    elif (path / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        found = sorted(p.name for p in path.glob("*.bin")) or "no weight files"
        raise ModelError(
            f"model.base: '{path}' has no safetensors weights ({found}). Only "
            "safetensors are loaded; re-save with save_pretrained(..., "
            "safe_serialization=True)."
        )
    for shard in shards:
        if not (path / shard).is_file():
            raise ModelError(f"model.base: weight shard {path / shard} is missing")
        _check_safetensors(path / shard)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(
            f"model.base: '{path}' has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES)}); save the tokenizer next to the model "
            "with tokenizer.save_pretrained"
        )


def check_local_model_dir(path: str | Path) -> None:
    """A local model directory has config.json, whole safetensors weights and a tokenizer."""
    _check_local_dir(Path(path))


def num_decoder_layers(config) -> int:
    """Decoder depth from a T5/mT5 or BART config (a ``PretrainedConfig`` or the dict of its
    ``config.json``): the one place that knows which key holds it."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    if get("model_type") == "bart":
        return int(get("decoder_layers"))
    return int(get("num_decoder_layers") or get("num_layers"))


def _read_config(model_cfg: ModelConfig, path: str):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except Exception as exc:
        raise ModelError(
            f"model.base '{path}': cannot read its config ({type(exc).__name__}: "
            f"{exc}). Check the id / path and model.revision; offline, the model "
            "must already be in the Hugging Face cache."
        ) from exc
    if config.model_type not in SUPPORTED_TYPES:
        raise ModelError(
            f"model.base '{path}' is a '{config.model_type}' model; NASH pruning "
            f"supports {list(SUPPORTED_TYPES)} (encoder-decoder T5/mT5/Flan-T5 and "
            "BART). Pick a supported base model."
        )
    return config


# --------------------------------------------------------------------------- demo model
def _build_demo(model_cfg: ModelConfig, splits_dir: Path, final: Path, seed: int) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from nash_core.data import read_split

    demo = model_cfg.demo
    with atomic_dir(final) as tmp:
        texts = [t for r in read_split(splits_dir, "train") for t in (r["source"], r["target"])]
        tok = build_demo_tokenizer(texts, tmp, vocab_size=demo.vocab_size)
        config = T5Config(
            vocab_size=len(tok),
            d_model=demo.d_model,
            d_ff=demo.d_ff,
            d_kv=demo.d_kv,
            num_heads=demo.num_heads,
            num_layers=demo.encoder_layers,
            num_decoder_layers=demo.decoder_layers,
            feed_forward_proj=demo.feed_forward_proj,
            dropout_rate=demo.dropout_rate,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
        )
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
        model.generation_config.decoder_start_token_id = tok.pad_token_id
        model.save_pretrained(str(tmp), safe_serialization=True)
        atomic_write_json(
            tmp / "nash_base.json",
            {"kind": "demo", "seed": seed, "model.demo": demo.model_dump(mode="json")},
        )


def prepare_base(
    model_cfg: ModelConfig,
    splits_dir: str | Path,
    models_dir: str | Path,
    *,
    data_cfg: DataConfig | None = None,
    seed: int = 0,
) -> BaseInfo:
    """Check (hub / local) or build (demo) the base model; see the module docstring.

    The demo model is written once to ``models_dir/base-<fingerprint>`` and reused. Call
    ``nash_core.config.check_decoder_layers(cfg, info.num_decoder_layers)`` afterwards to check
    the pruning arms against the real decoder depth.
    """
    kind = _kind(model_cfg.base)
    if kind == "demo":
        from nash_core.data import splits_fingerprint

        fp = fingerprint_base(
            model_cfg,
            "demo",
            data_cfg=data_cfg,
            splits_fp=splits_fingerprint(splits_dir),
            seed=seed,
        )
        final = Path(models_dir) / f"base-{fp}"
        if not (final / "nash_base.json").is_file():
            _build_demo(model_cfg, Path(splits_dir), final, seed)
        return BaseInfo(str(final), None, "t5", model_cfg.demo.decoder_layers, fp)

    path = str(Path(model_cfg.base).expanduser()) if kind == "local" else model_cfg.base
    if kind == "local":
        _check_local_dir(Path(path))
    config = _read_config(model_cfg, path)
    return BaseInfo(
        path,
        model_cfg.revision if kind == "hub" else None,
        config.model_type,
        num_decoder_layers(config),
        fingerprint_base(model_cfg, path),
    )
