"""What must hold before a sweep opens an MLflow run or trains anything.

A bad data row, a corrupt weights file or an unreachable tracking server found after the sweep's
runs were created leaves a FAILED sweep in MLflow and, found after training started, costs the
training time. So ``nash run`` (:func:`nash_cli.sweep.run_sweep`) calls :func:`preflight` before
Prefect even starts, and the sweep flow calls it again just before ``open_sweep`` (every step is
then a cache hit), so deployments and ``nash watch`` get the same guarantee.

Checks, in order; each raises a :class:`nash_core.errors.NashError` (exit code 2):

1. the data: loaded, columns mapped, every row validated, split (:func:`data_step`);
2. the base model: supported architecture, weights present and intact, every arm's decoder depth
   possible (:func:`base_step`);
3. the tokenizer: not larger than the model's vocabulary, and the train and validation splits
   keep at least one usable row after tokenisation (cached: the teacher reuses the ids);
4. the tracking store: an HTTP server answers, a local store's directory is writable (after
   the data, so that bad input is reported without importing mlflow: seconds saved);
5. the disk: free space in the workdir covers the sweep's estimated writes.

:func:`data_step` and :func:`base_step` are the sweep's own data and base steps (same cache keys),
without Prefect or MLflow: the flow's tasks wrap them and record the result on the sweep run.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nash_core.config import NashConfig, check_decoder_layers
from nash_core.errors import ModelError, NashError, TrackingError
from tasks.cache import StepResult, cache_key, run_cached

#: Model-sized files a sweep keeps, in units of the base model's fp32 weights. Fixed part: the
#: teacher's best weights, its kept checkpoint (weights + AdamW's two moments), its MLflow model
#: copy, and the live checkpoint of the step being trained (3; removed when the step ends).
FIXED_COPIES = 8
#: Per candidate: stage result, materialised export, fine-tuned model, MLflow model copy.
COPIES_PER_CANDIDATE = 4
SKIP_DISK_CHECK = "NASH_SKIP_DISK_CHECK"


@dataclass(frozen=True)
class PreflightResult:
    data: StepResult
    base: StepResult
    free_bytes: int
    needed_bytes: int


# --------------------------------------------------------------------------- data and base
def _local_file_stamps(cfg: NashConfig) -> dict:
    """Size and mtime of local data files: their content can change under an unchanged config."""
    stamps = {}
    for split, f in (cfg.data.files or {}).items():
        p = Path(f)
        st = p.stat() if p.is_file() else None
        stamps[split] = [str(p.resolve()), st.st_size, st.st_mtime_ns] if st else str(p)
    return stamps


def data_step(cfg: NashConfig, workdir: str | Path) -> StepResult:
    """Validated train/validation/test splits; ``meta.fingerprint`` is their content hash."""
    from nash_core.data import prepare_splits, splits_fingerprint

    key = cache_key(
        "data", ("nash_core.data",), data=cfg.section_hash("data"), files=_local_file_stamps(cfg)
    )

    def compute(rdir: Path) -> dict:
        splits = prepare_splits(cfg.data, Path(workdir) / "data")
        return {"splits": str(splits), "fingerprint": splits_fingerprint(splits)}

    return run_cached(workdir, "data", key, compute)


def base_step(cfg: NashConfig, workdir: str | Path, data: StepResult) -> StepResult:
    """The base model (demo: built here; hub/local: checked) and its content fingerprint;
    ``ConfigError`` when an arm keeps more decoder layers than the model has."""
    from nash_core.base_model import prepare_base as build

    key = cache_key(
        "base",
        ("nash_core.base_model",),
        data=data.meta["fingerprint"],
        model=cfg.section_hash("model", "experiment.seed"),
        source=base_source_fingerprint(cfg.model),
    )

    def compute(rdir: Path) -> dict:
        info = build(
            cfg.model,
            data.meta["splits"],
            Path(workdir) / "models",
            data_cfg=cfg.data,
            seed=cfg.experiment.seed,
        )
        return info.to_dict()

    res = run_cached(workdir, "base", key, compute)
    check_decoder_layers(cfg, res.meta["num_decoder_layers"])  # ConfigError, as it is
    return res


def base_source_fingerprint(model_cfg) -> str | None:
    """What the base weights ARE, for a hub id (the commit its revision resolves to) or a local
    directory (a hash of its files); None for the demo, whose recipe is in the config.

    Part of the base step's key: new weights under an unchanged config (a directory rewritten
    in place, a branch that moved) must rebuild the base step and everything keyed on it.
    """
    from nash_core.base_model import fingerprint_base

    if model_cfg.base == "demo":
        return None
    path = Path(model_cfg.base).expanduser()
    return fingerprint_base(model_cfg, path if path.is_dir() else model_cfg.base)


# --------------------------------------------------------------------------- checks
def check_tracking(uri: str, timeout_s: float = 10.0) -> None:
    """An HTTP tracking server must answer (any HTTP status counts: auth or a proxy in front is
    still a server); a local SQLite store's directory must be writable. Other schemes are left
    to MLflow. Creates nothing."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}). Start it, or fix "
                "experiment.tracking_uri / MLFLOW_TRACKING_URI; nothing was started."
            ) from None
    elif uri.startswith("sqlite:///"):
        where = Path(uri.removeprefix("sqlite:///")).parent
        while not where.exists() and where != where.parent:
            where = where.parent
        if not os.access(where, os.W_OK):
            raise TrackingError(
                f"MLflow store {uri}: cannot write in {where}; fix its permissions "
                "or point MLFLOW_TRACKING_URI / --workdir elsewhere"
            )


def _model_config(cfg: NashConfig, base: StepResult):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            base.meta["path"],
            revision=base.meta["revision"],
            trust_remote_code=cfg.model.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model.base '{cfg.model.base}': cannot read its config ({type(exc).__name__}: {exc})"
        ) from exc


def check_tokenizer(cfg: NashConfig, base: StepResult, data: StepResult, model_config) -> None:
    """The tokenizer fits the model's embeddings, and training data survives tokenisation."""
    from transformers import AutoTokenizer

    from nash_core.data import tokenize_split

    path = base.meta["path"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=base.meta["revision"], trust_remote_code=cfg.model.trust_remote_code
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(
            f"model.base '{cfg.model.base}': cannot load its tokenizer "
            f"({type(exc).__name__}: {exc}); save it next to the model with "
            "tokenizer.save_pretrained"
        ) from exc
    vocab = model_config.vocab_size
    if len(tokenizer) > vocab:
        raise ModelError(
            f"model.base '{cfg.model.base}': the tokenizer has {len(tokenizer)} "
            f"tokens but the {model_config.model_type} model embeds only {vocab}; "
            "the tokenizer does not belong to this model (save the matching "
            "tokenizer next to it)"
        )
    for split in ("train", "validation"):
        tokenize_split(data.meta["splits"], split, tokenizer, cfg.data)


def untied_head(model_config, path: str | Path | None = None) -> bool:
    """Whether the LM head is its own matrix. transformers 5 forces ``tie_word_embeddings`` on
    T5/MT5 configs, so a model built from the config ties it; T5 v1.1 / Flan-T5 / mT5 weights
    hold a separate ``lm_head.weight`` that loading keeps untied (a local directory: read from
    its safetensors headers; a hub config: T5 without output scaling, and every mT5)."""
    files = sorted(Path(path).glob("*.safetensors")) if path and Path(path).is_dir() else []
    if files:
        from safetensors import safe_open

        for file in files:
            with safe_open(str(file), "pt") as f:
                if "lm_head.weight" in f.keys():  # noqa: SIM118 (not a dict)
                    return True
        return False
    if model_config.model_type == "mt5":
        return True
    return model_config.model_type == "t5" and not getattr(
        model_config, "scale_decoder_outputs", True
    )


def fp32_model_bytes(model_config, path: str | Path | None = None) -> int:
    """Size of the model's weights in fp32, counted on the meta device (no memory, no download);
    an untied LM head (see :func:`untied_head`) counted once more."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(model_config)
    n = sum(p.numel() for p in model.parameters())
    if untied_head(model_config, path):
        n += model.get_input_embeddings().weight.numel()
    return 4 * n


def num_candidates(cfg: NashConfig) -> int:
    """Trained candidates besides the teacher: one per sparsity target, one per target-less
    arm, once per seed of ``experiment.seeds``."""
    per_seed = sum(max(1, len(arm.targets)) for arm in cfg.pruning.arms)
    return per_seed * max(1, len(cfg.experiment.seeds))


def check_disk(workdir: str | Path, model_bytes: int, candidates: int) -> tuple[int, int]:
    """``(free, needed)`` bytes; raises when the workdir's file system has too little room."""
    needed = model_bytes * (FIXED_COPIES + COPIES_PER_CANDIDATE * candidates)
    free = shutil.disk_usage(workdir).free
    if free < needed and os.environ.get(SKIP_DISK_CHECK, "") in ("", "0", "false"):
        gb = 1024**3
        raise NashError(
            f"not enough free disk space in workdir {workdir}: {free / gb:.2f} GiB free, the sweep "
            f"needs about {needed / gb:.2f} GiB (base model {model_bytes / 1024**2:.1f} MiB in "
            f"fp32 x ({FIXED_COPIES} + {COPIES_PER_CANDIDATE} x {candidates} candidates)). Free "
            f"some space, use another --workdir, or set {SKIP_DISK_CHECK}=1 if you know it fits."
        )
    return free, needed


# --------------------------------------------------------------------------- all of it
def preflight(cfg: NashConfig, workdir: str | Path) -> PreflightResult:
    """Run every check (see the module docstring); raises a NashError naming the culprit."""
    from nash_mlflow.tracking import resolve_tracking_uri

    Path(workdir).mkdir(parents=True, exist_ok=True)
    data = data_step(cfg, workdir)
    base = base_step(cfg, workdir, data)
    model_config = _model_config(cfg, base)
    check_tokenizer(cfg, base, data, model_config)
    check_tracking(resolve_tracking_uri(cfg, workdir))
    free, needed = check_disk(
        workdir, fp32_model_bytes(model_config, base.meta["path"]), num_candidates(cfg)
    )
    return PreflightResult(data, base, free, needed)
