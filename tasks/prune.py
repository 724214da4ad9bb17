"""Prefect tasks of one arm: pruning stage -> materialise -> final fine-tune.

Stage i of an arm is keyed on stage i-1's key (it starts from its weights, masks and
multipliers) and on its own target only, so changing the last target of an arm recomputes that
stage and what follows from it, nothing before. No retries: a failure here is training maths.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from nash_core.launch import run_step
from nash_core.methods import get_method
from nash_core.runtime import pick_device
from nash_core.steps import FinetuneArgs, StageArgs
from nash_mlflow import tracking
from tasks.cache import StepResult, cache_key, run_cached
from tasks.context import GPU_TAG, CandidateSpec, SweepContext

RUNNER = "nash_core.prune"  # the one stage runner, shared by every method
#: Config sections every training step of an arm depends on (tokenisation, seed).
_TRAINING = (
    "data.source_prefix",
    "data.max_source_length",
    "data.max_target_length",
    "experiment.seed",
)


def step_code(method: str) -> tuple[str, str]:
    """The code a stage / export / fine-tune of ``method`` runs (tasks/cache.py:
    code_version): the shared runner and the method's own module -- so editing one method
    recomputes only its own cached steps."""
    return (RUNNER, get_method(method).module)


def _seed(spec: CandidateSpec) -> dict:
    """A replicate's seed in its cache key (a primary's key is as it was without seeds)."""
    return {} if spec.seed is None else {"seed": spec.seed}


def _curve(ctx: SweepContext, spec: CandidateSpec, phase: str, rdir: Path):
    return tracking.CurveLogger(
        tracking.make_client(ctx.tracking_uri), spec.run_id, phase, rdir / f"{phase}.jsonl"
    )


@task(name="prune-stage", cache_policy=NO_CACHE, task_run_name="stage-{spec.label}", tags=[GPU_TAG])
def prune_stage(
    ctx: SweepContext,
    spec: CandidateSpec,
    data: StepResult,
    teacher: StepResult,
    previous: StepResult | None,
) -> StepResult:
    """Train one sparsity target of an arm (SFT: the shallow-decoder distillation, no masks)."""
    cfg = ctx.cfg
    arm = cfg.pruning.arms[spec.arm_index]
    prev_target = arm.targets[spec.stage - 2] if spec.stage > 1 else 0.0
    target = spec.target or 0.0
    key = cache_key(
        "stage",
        step_code(arm.method),
        teacher=teacher.key,
        previous=previous.key if previous else None,
        arm=arm.identity(),
        prev_target=prev_target,
        target=target,
        data=data.meta["fingerprint"],
        sections=cfg.section_hash("pruning.stage", *_TRAINING),
        **_seed(spec),
    )

    def compute(rdir: Path) -> dict:
        out = run_step(
            "stage",
            cfg,
            StageArgs(
                teacher_dir=teacher.meta["model_dir"],
                arm_index=spec.arm_index,
                init_dir=previous.meta["model_dir"] if previous else None,
                prev_target=prev_target,
                target=target,
                out_dir=str(rdir / "stage"),
                splits_dir=data.meta["splits"],
                seed=spec.seed,
            ),
            callback=_curve(ctx, spec, "stage", rdir),
            device=pick_device(cfg.experiment.device),
        )
        return {"model_dir": str(out), "curves": {"stage": "stage.jsonl"}}

    return run_cached(ctx.workdir, "stage", key, compute)


@task(name="materialize", cache_policy=NO_CACHE, task_run_name="materialize-{spec.label}")
def materialize(ctx: SweepContext, spec: CandidateSpec, stage: StepResult) -> StepResult:
    """Fold and slice the stage's masks into a smaller exported model."""
    from nash_core.prune import materialize_stage

    def compute(rdir: Path) -> dict:
        return {"model_dir": str(materialize_stage(stage.meta["model_dir"], rdir / "export"))}

    code = step_code(ctx.cfg.pruning.arms[spec.arm_index].method)
    return run_cached(ctx.workdir, "export", cache_key("export", code, stage=stage.key), compute)


@task(name="finetune", cache_policy=NO_CACHE, task_run_name="finetune-{spec.label}", tags=[GPU_TAG])
def finetune(
    ctx: SweepContext,
    spec: CandidateSpec,
    data: StepResult,
    teacher: StepResult,
    export: StepResult,
) -> StepResult:
    """Final fine-tune of the exported model (the export itself when disabled)."""
    cfg = ctx.cfg
    if not cfg.finetune.enabled:
        return export
    arm = cfg.pruning.arms[spec.arm_index]
    steps = arm.finetune_steps
    key = cache_key(
        "finetune",
        step_code(arm.method),
        export=export.key,
        teacher=teacher.key,
        data=data.meta["fingerprint"],
        sections=cfg.section_hash("finetune", *_TRAINING),
        **({"steps": steps} if steps is not None else {}),
        **_seed(spec),
    )

    def compute(rdir: Path) -> dict:
        out = run_step(
            "finetune",
            cfg,
            FinetuneArgs(
                export_dir=export.meta["model_dir"],
                teacher_dir=teacher.meta["model_dir"],
                arm_index=spec.arm_index,
                out_dir=str(rdir / "model"),
                splits_dir=data.meta["splits"],
                seed=spec.seed,
            ),
            callback=_curve(ctx, spec, "finetune", rdir),
            device=pick_device(cfg.experiment.device),
        )
        return {"model_dir": str(out), "curves": {"finetune": "finetune.jsonl"}}

    return run_cached(ctx.workdir, "finetune", key, compute)


@task(name="quantize", cache_policy=NO_CACHE, task_run_name="variant-{spec.label}")
def quantize(
    ctx: SweepContext, spec: CandidateSpec, model: StepResult, data: StepResult | None = None
) -> StepResult:
    """The serving variant (``spec.precision``, ``benchmark.variants``) of a finished model.

    A PyTorch precision (int8 dynamic quantisation, bf16 or fp16 cast) is a marker naming the
    source dir and its weights' hash (:mod:`nash_core.quantize`): loading re-quantises /
    re-casts, so nothing is pickled. Another runtime's variant (``ct2-int8``...) is a
    conversion checked against the source (:mod:`nash_core.runtimes`), whose thread setting is
    then measured on ``data``'s test sources; a model that runtime cannot express gives
    ``meta["not_expressible"]`` (the reason) instead of a model dir.
    """
    import os

    from nash_core.runtimes import NotExpressible, split_variant

    variant = spec.precision or "int8"
    runtime, precision = split_variant(variant)
    cfg = ctx.cfg

    def compute(rdir: Path) -> dict:
        source = model.meta["model_dir"]
        try:
            out = runtime.prepare(source, rdir / "model", precision)
        except NotExpressible as exc:
            return {"not_expressible": str(exc), "source_dir": source}
        meta = {"model_dir": str(out), "source_dir": source, "runtime": runtime.name}
        if runtime.self_contained and data is not None:
            meta["threads"] = _choose_threads(ctx, data, out)
        return meta

    code, extra = ("nash_core.quantize",), {}
    if runtime.self_contained:  # a conversion, and threads measured on this machine
        code += ("nash_core.runtimes",)
        extra = {
            "cores": os.cpu_count(),
            "sections": cfg.section_hash("evaluation", "benchmark.batch_sizes"),
        }
    key = cache_key(variant, code, source=model.key, **extra)
    return run_cached(ctx.workdir, variant, key, compute)


def _choose_threads(ctx: SweepContext, data: StepResult, out: Path) -> dict:
    from nash_core.data import read_split
    from nash_core.runtimes.ct2 import choose_threads

    cfg = ctx.cfg
    rows = read_split(data.meta["splits"], "test", limit=max(cfg.benchmark.batch_sizes))
    texts = [cfg.data.source_prefix + r["source"] for r in rows]
    threads = choose_threads(
        out, texts, cfg.evaluation, cfg.benchmark.batch_sizes, cfg.data.max_source_length
    )
    return {k: v for k, v in threads.items() if k != "median_ms"}
