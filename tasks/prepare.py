"""Prefect tasks for the sweep's common trunk: data splits, base model, teacher.

Each task wraps one nash_core function, keys its result (tasks/cache.py) on what determines it
and records what it used on the sweep's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import tracking
from tasks.cache import StepResult, cache_key, run_cached
from tasks.context import CandidateSpec, SweepContext
from tasks.retry import transient_retries


def _local_file_stamps(ctx: SweepContext) -> dict:
    """Size and mtime of local data files: their content can change under an unchanged config."""
    stamps = {}
    for split, f in (ctx.cfg.data.files or {}).items():
        p = Path(f)
        st = p.stat() if p.is_file() else None
        stamps[split] = [str(p.resolve()), st.st_size, st.st_mtime_ns] if st else str(p)
    return stamps


@task(name="prepare-data", cache_policy=NO_CACHE, **transient_retries())
def prepare_data(ctx: SweepContext) -> StepResult:
    """Validated train/validation/test splits; ``meta.fingerprint`` is their content hash."""
    from nash_core.data import prepare_splits, splits_fingerprint

    cfg = ctx.cfg
    key = cache_key("data", ("nash_core.data",), data=cfg.section_hash("data"),
                    files=_local_file_stamps(ctx))

    def compute(rdir: Path) -> dict:
        splits = prepare_splits(cfg.data, Path(ctx.workdir) / "data")
        return {"splits": str(splits), "fingerprint": splits_fingerprint(splits)}

    res = run_cached(ctx.workdir, "data", key, compute)
    tracking.set_tags(tracking.make_client(ctx.tracking_uri), ctx.sweep_run_id,
                      {"nash.data_fingerprint": res.meta["fingerprint"],
                       "nash.data_splits": res.meta["splits"]})
    return res


@task(name="prepare-base", cache_policy=NO_CACHE, **transient_retries())
def prepare_base(ctx: SweepContext, data: StepResult) -> StepResult:
    """The base model (demo: built here; hub/local: checked) and its content fingerprint."""
    from nash_core.base_model import prepare_base as build
    from nash_core.config import ConfigError, check_decoder_layers

    cfg = ctx.cfg
    key = cache_key("base", ("nash_core.base_model",), data=data.meta["fingerprint"],
                    model=cfg.section_hash("model", "experiment.seed"))

    def compute(rdir: Path) -> dict:
        info = build(cfg.model, data.meta["splits"], Path(ctx.workdir) / "models",
                     data_cfg=cfg.data, seed=cfg.experiment.seed)
        return info.to_dict()

    res = run_cached(ctx.workdir, "base", key, compute)
    try:
        check_decoder_layers(cfg, res.meta["num_decoder_layers"])
    except ValueError as exc:
        raise ConfigError("config", [str(exc)]) from None
    tracking.set_tags(tracking.make_client(ctx.tracking_uri), ctx.sweep_run_id, {
        "nash.base_model": cfg.model.base, "nash.base_revision": res.meta["revision"],
        "nash.base_fingerprint": res.meta["fingerprint"],
        "nash.base_model_type": res.meta["model_type"]})
    return res


@task(name="teacher", cache_policy=NO_CACHE)
def get_teacher(ctx: SweepContext, data: StepResult, base: StepResult,
                spec: CandidateSpec) -> StepResult:
    """Train the teacher (curves live on its MLflow run), or take ``teacher.path`` as it is."""
    from nash_core.base_model import BaseInfo, fingerprint_base
    from nash_core.teacher import train_teacher

    cfg = ctx.cfg
    client = tracking.make_client(ctx.tracking_uri)
    if cfg.teacher.path:
        fp = fingerprint_base(cfg.model.model_copy(update={"base": cfg.teacher.path}),
                              cfg.teacher.path)
        key = cache_key("teacher-given", ("nash_core.base_model",), fingerprint=fp)
        res = run_cached(ctx.workdir, "teacher", key,
                         lambda rdir: {"model_dir": str(Path(cfg.teacher.path).resolve()),
                                       "trained": False})
        tracking.set_tags(client, spec.run_id, {"nash.teacher_source": cfg.teacher.path})
        return res

    key = cache_key("teacher", ("nash_core.teacher",), base=base.meta["fingerprint"],
                    data=data.meta["fingerprint"],
                    sections=cfg.section_hash("data", "teacher", "experiment.seed"))

    def compute(rdir: Path) -> dict:
        curve = tracking.CurveLogger(client, spec.run_id, "train", rdir / "curve.jsonl")
        out = train_teacher(cfg, data.meta["splits"], BaseInfo(**base.meta), rdir / "model",
                            callback=curve)
        return {"model_dir": str(out), "trained": True, "curves": {"train": "curve.jsonl"}}

    return run_cached(ctx.workdir, "teacher", key, compute)
