"""Prefect tasks for the sweep's common trunk: data splits, base model, teacher.

Each task wraps one nash_core function, keys its result (tasks/cache.py) on what determines it
and records what it used on the sweep's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from nash_mlflow import tracking
from tasks.cache import StepResult, cache_key, run_cached
from tasks.context import GPU_TAG, CandidateSpec, SweepContext
from tasks.preflight import base_step, data_step
from tasks.retry import transient_retries


@task(name="prepare-data", cache_policy=NO_CACHE, **transient_retries())
def prepare_data(ctx: SweepContext) -> StepResult:
    """:func:`data_step`, recorded on the sweep run."""
    res = data_step(ctx.cfg, ctx.workdir)
    tracking.set_tags(
        tracking.make_client(ctx.tracking_uri),
        ctx.sweep_run_id,
        {"nash.data_fingerprint": res.meta["fingerprint"], "nash.data_splits": res.meta["splits"]},
    )
    return res


@task(name="prepare-base", cache_policy=NO_CACHE, **transient_retries())
def prepare_base(ctx: SweepContext, data: StepResult) -> StepResult:
    """:func:`base_step`, recorded on the sweep run."""
    cfg = ctx.cfg
    res = base_step(cfg, ctx.workdir, data)
    tracking.set_tags(
        tracking.make_client(ctx.tracking_uri),
        ctx.sweep_run_id,
        {
            "nash.base_model": cfg.model.base,
            "nash.base_revision": res.meta["revision"],
            "nash.base_fingerprint": res.meta["fingerprint"],
            "nash.base_model_type": res.meta["model_type"],
        },
    )
    return res


@task(name="teacher", cache_policy=NO_CACHE, tags=[GPU_TAG])
def get_teacher(
    ctx: SweepContext, data: StepResult, base: StepResult, spec: CandidateSpec
) -> StepResult:
    """Train the teacher (curves live on its MLflow run), or take ``teacher.path`` as it is."""
    from nash_core.base_model import fingerprint_base
    from nash_core.launch import run_step
    from nash_core.steps import TeacherArgs

    cfg = ctx.cfg
    client = tracking.make_client(ctx.tracking_uri)
    if cfg.teacher.path:
        fp = fingerprint_base(
            cfg.model.model_copy(update={"base": cfg.teacher.path}), cfg.teacher.path
        )
        key = cache_key("teacher-given", ("nash_core.base_model",), fingerprint=fp)
        res = run_cached(
            ctx.workdir,
            "teacher",
            key,
            lambda rdir: {"model_dir": str(Path(cfg.teacher.path).resolve()), "trained": False},
        )
        tracking.set_tags(client, spec.run_id, {"nash.teacher_source": cfg.teacher.path})
        return res

    key = cache_key(
        "teacher",
        ("nash_core.teacher",),
        base=base.meta["fingerprint"],
        data=data.meta["fingerprint"],
        sections=cfg.section_hash("data", "teacher", "experiment.seed"),
    )

    def compute(rdir: Path) -> dict:
        curve = tracking.CurveLogger(client, spec.run_id, "train", rdir / "curve.jsonl")
        out = run_step(
            "teacher",
            cfg,
            TeacherArgs(
                splits_dir=data.meta["splits"],
                base_info=base.meta,
                out_dir=str(rdir / "model"),
            ),
            callback=curve,
        )
        return {"model_dir": str(out), "trained": True, "curves": {"train": "curve.jsonl"}}

    return run_cached(ctx.workdir, "teacher", key, compute)
