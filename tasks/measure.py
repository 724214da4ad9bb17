"""Prefect tasks that measure models: one evaluation and one benchmark protocol for all."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from nash_core.runtime import pick_device, set_threads
from tasks.cache import StepResult, cache_key, run_cached
from tasks.context import GPU_TAG, SweepContext

#: Hardware facts that change latencies (not the load average or the Python patch level).
_MACHINE = (
    "device",
    "dtype",
    "cpu_model",
    "cpu_cores_logical",
    "torch_threads",
    "gpu_name",
    "torch_version",
    "transformers_version",
)


@task(name="evaluate", cache_policy=NO_CACHE, tags=[GPU_TAG])
def evaluate(
    ctx: SweepContext, data: StepResult, model: StepResult, teacher_eval: StepResult | None = None
) -> StepResult:
    """ROUGE on the test split; with ``teacher_eval``: retention and the paired-bootstrap CI."""
    from nash_core.evaluate import evaluate_model

    cfg = ctx.cfg
    set_threads(cfg.experiment.torch_threads)  # per OS thread: this worker's, whatever ran here
    key = cache_key(
        "eval",
        ("nash_core.evaluate",),
        model=model.key,
        data=data.meta["fingerprint"],
        sections=cfg.section_hash(
            "evaluation", "data.source_prefix", "data.max_source_length", "experiment.seed"
        ),
        teacher=teacher_eval.key if teacher_eval else None,
    )

    def compute(rdir: Path) -> dict:
        metrics = evaluate_model(
            model.meta["model_dir"],
            data.meta["splits"],
            cfg.evaluation,
            rdir / "eval",
            teacher_eval_dir=Path(teacher_eval.path) / "eval" if teacher_eval else None,
            device=pick_device(cfg.experiment.device),
            source_prefix=cfg.data.source_prefix,
            max_source_length=cfg.data.max_source_length,
            seed=cfg.experiment.seed,
        )
        return {"metrics": metrics, "eval_dir": str(rdir / "eval")}

    return run_cached(ctx.workdir, "eval", key, compute)


@task(name="benchmark", cache_policy=NO_CACHE, tags=[GPU_TAG])
def benchmark(
    ctx: SweepContext,
    data: StepResult,
    models: list[StepResult],
    names: list[str],
    eligible: list[str] | None = None,
) -> StepResult:
    """Time every model in one process, interleaved, the first (the teacher) as the baseline.

    Keyed on every model, so a changed candidate re-times them all: speedups are only
    comparable within one measurement session. ``eligible``: the candidates non-inferior in
    quality; when the fastest of them are tied on speed at ``selection.batch_size``, they get
    extra rounds (``benchmark.extra_rounds``, ``benchmark.max_extra_seconds``).
    """
    from nash_core.benchmark import benchmark_models, hardware_fingerprint
    from nash_core.data import read_split
    from nash_core.io import atomic_write_json

    cfg = ctx.cfg
    set_threads(cfg.experiment.torch_threads)  # per OS thread: this worker's, whatever ran here
    device = pick_device(cfg.experiment.device)
    hardware = hardware_fingerprint(device, cfg.benchmark.dtype, name=cfg.benchmark.hardware_name)
    key = cache_key(
        "bench",
        ("nash_core.benchmark",),
        models=[m.key for m in models],
        names=names,
        eligible=eligible,
        data=data.meta["fingerprint"],
        sections=cfg.section_hash(
            "benchmark", "evaluation", "data.source_prefix", "data.max_source_length"
        ),
        hardware={k: hardware[k] for k in _MACHINE},
    )

    rows = read_split(data.meta["splits"], "test", limit=cfg.benchmark.num_inputs)
    texts = [cfg.data.source_prefix + r["source"] for r in rows]

    def compute(rdir: Path) -> dict:
        result = benchmark_models(
            [m.meta["model_dir"] for m in models],
            cfg.benchmark,
            cfg.evaluation,
            texts=texts,
            max_source_length=cfg.data.max_source_length,
            device=device,
            names=names,
            seed=cfg.experiment.seed,
            adaptive_batch=cfg.selection.batch_size,
            eligible=eligible,
        )
        atomic_write_json(rdir / "benchmark.json", result)
        return {"benchmark_json": str(rdir / "benchmark.json")}

    result = run_cached(ctx.workdir, "bench", key, compute)
    log_benchmark_inputs(ctx, texts)
    return result


def log_benchmark_inputs(ctx: SweepContext, texts: list[str]) -> None:
    """Record on the sweep run the texts the benchmark timed (prefix included), so that
    ``nash benchmark --sweep`` times the same inputs on another machine without the data."""
    from nash_core.io import atomic_write_json
    from nash_mlflow import tracking
    from nash_mlflow.rebenchmark import INPUTS_ARTIFACT

    path = atomic_write_json(
        Path(ctx.workdir) / "sweeps" / ctx.sweep_run_id / INPUTS_ARTIFACT,
        {"texts": texts, "max_source_length": ctx.cfg.data.max_source_length},
    )
    tracking.make_client(ctx.tracking_uri).log_artifact(
        ctx.sweep_run_id, str(path), str(Path(INPUTS_ARTIFACT).parent)
    )


def quality_eligible(
    ctx: SweepContext,
    teacher_eval: StepResult,
    evaluations: dict,
    over_seeds: dict | None = None,
) -> list[str]:
    """The candidates non-inferior in quality under the selection policy (``evaluations`` maps a
    label to its evaluation StepResult; ``over_seeds`` a label to its aggregate over
    experiment.seeds, :func:`aggregate_seeds`): the only ones the adaptive rounds may spend
    time on."""
    from nash_core.selection import quality_reasons

    teacher_q = float(teacher_eval.meta["metrics"]["rougeL"])
    over_seeds = over_seeds or {}
    return [
        label
        for label, ev in evaluations.items()
        if not quality_reasons(
            {**ev.meta["metrics"], **over_seeds.get(label, {})}, teacher_q, ctx.cfg.selection
        )
    ]


@task(name="compare-with-sft", cache_policy=NO_CACHE)
def compare_with_sft(ctx: SweepContext, evaluations: dict[str, tuple]) -> dict[str, dict]:
    """NASH vs SFT at the same decoder depth: what the narrow encoder costs, with its interval.

    ``evaluations`` maps a candidate label to ``(spec, evaluation StepResult)``. For every
    pruned (NASH) candidate whose arm keeps k decoder layers and an SFT candidate keeping the
    same k, the paired-bootstrap interval of (NASH - SFT) ROUGE-L is logged on the NASH run as
    ``rougeL_vs_sft_delta`` / ``_ci_low`` / ``_ci_high`` and tagged with the SFT label.
    """
    from nash_core.evaluate import compare_evaluations
    from nash_core.methods import get_method
    from nash_mlflow import tracking

    cfg = ctx.cfg
    trained = {
        label: (spec, ev, get_method(spec.method))
        for label, (spec, ev) in evaluations.items()
        if not spec.quantized and not spec.is_teacher and not spec.is_replicate
    }
    sft = {
        spec.decoder_layers: (spec, ev)
        for spec, ev, method in trained.values()
        if method.depth_baseline
    }
    client = tracking.make_client(ctx.tracking_uri)
    out = {}
    for label, (spec, ev, method) in trained.items():
        if not method.compare_with_depth_baseline or spec.decoder_layers not in sft:
            continue
        base_spec, base_ev = sft[spec.decoder_layers]
        cmp = compare_evaluations(
            ev.meta["eval_dir"], base_ev.meta["eval_dir"], cfg.evaluation, cfg.experiment.seed
        )
        out[label] = {"vs": base_spec.label, **cmp}
        tracking.log_metrics(client, spec.run_id, {f"rougeL_vs_sft_{k}": v for k, v in cmp.items()})
        tracking.set_tags(client, spec.run_id, {"nash.vs_sft": base_spec.label})
    return out


def _by_seed(evaluations: dict[str, tuple]) -> dict[str, list[tuple]]:
    """Primary trained label -> [(spec, evaluation)] in seed order (the primary first)."""
    groups: dict[str, list[tuple]] = {}
    for spec, ev in evaluations.values():
        if not spec.quantized and not spec.is_teacher:
            groups.setdefault(spec.primary_label, []).append((spec, ev))
    return {k: sorted(v, key=lambda p: p[0].is_replicate) for k, v in groups.items()}


@task(name="aggregate-seeds", cache_policy=NO_CACHE)
def aggregate_seeds(
    ctx: SweepContext, teacher_eval: StepResult, evaluations: dict[str, tuple]
) -> dict[str, dict]:
    """Quality over ``experiment.seeds`` (nash_core/seeds.py), logged where the selection and
    the views read it. No-op without replicate seeds.

    ``evaluations`` maps a label to ``(spec, evaluation StepResult)``, replicates included. For
    every trained candidate: per-seed ROUGE-L (``rougeL_seed<N>``) and the aggregate against the
    teacher (``rougeL_seeds``, ``_std``, ``rougeL_retention_seeds`` and its two-level interval)
    on its run and on its serving variants' runs (a variant is the primary seed's model served
    another way: it answers for the recipe's aggregate too); for a NASH candidate, NASH - SFT at
    the same depth paired over seeds and examples (``rougeL_vs_sft_seeds_*``). The whole
    summary is written as ``seeds.json`` on the sweep run."""
    from nash_core import seeds
    from nash_core.io import atomic_write_json
    from nash_core.methods import get_method
    from nash_mlflow import tracking

    cfg = ctx.cfg
    if not cfg.experiment.replicate_seeds:
        return {}
    ev_cfg, client = cfg.evaluation, tracking.make_client(ctx.tracking_uri)
    groups = _by_seed(evaluations)
    summary: dict[str, dict] = {}
    for label, members in groups.items():
        dirs = [ev.meta["eval_dir"] for _, ev in members]
        agg = seeds.vs_teacher(
            dirs, teacher_eval.meta["eval_dir"], ev_cfg.bootstrap_samples, ev_cfg.confidence
        )
        per_seed = {
            f"rougeL_seed{cfg.experiment.seed if s.seed is None else s.seed}": float(
                ev.meta["metrics"]["rougeL"]
            )
            for s, ev in members
        }
        summary[label] = {**agg, **per_seed}
        runs = [members[0][0].run_id] + [
            s.run_id for s, _ in evaluations.values() if s.quantized and s.source_label == label
        ]
        tracking.log_metrics(client, runs[0], per_seed)  # the trained model's run only
        for run_id in runs:
            tracking.log_metrics(client, run_id, agg)
    depth_baseline = {
        s.decoder_layers: label
        for label, ((s, _), *_) in groups.items()
        if get_method(s.method).depth_baseline
    }
    for label, members in groups.items():
        spec = members[0][0]
        base = depth_baseline.get(spec.decoder_layers)
        if base is None or not get_method(spec.method).compare_with_depth_baseline:
            continue
        if len(groups[base]) != len(members):
            continue
        cmp = seeds.paired_over_seeds(
            [ev.meta["eval_dir"] for _, ev in members],
            [ev.meta["eval_dir"] for _, ev in groups[base]],
            ev_cfg.bootstrap_samples,
            ev_cfg.confidence,
        )
        summary[label]["vs_sft"] = {"vs": base, **cmp}
        tracking.log_metrics(
            client,
            spec.run_id,
            {
                "rougeL_vs_sft_seeds_delta": cmp["delta"],
                "rougeL_vs_sft_seeds_ci_low": cmp["ci_low"],
                "rougeL_vs_sft_seeds_ci_high": cmp["ci_high"],
                "rougeL_vs_sft_seeds_better": float(cmp["seeds_better"]),
            },
        )
    path = atomic_write_json(
        Path(ctx.workdir) / "sweeps" / ctx.sweep_run_id / "seeds.json",
        {"seeds": [cfg.experiment.seed, *cfg.experiment.replicate_seeds], "candidates": summary},
    )
    client.log_artifact(ctx.sweep_run_id, str(path))
    return summary
