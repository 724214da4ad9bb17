"""Prefect task that writes one candidate's child run: metrics, curves, artifacts, pyfunc model."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from nash_core.io import atomic_write_json, read_json
from nash_core.metrics import with_headline
from nash_core.sparsity import zero_stats
from nash_mlflow import tracking
from nash_mlflow.registry import log_candidate_model
from tasks.cache import StepResult
from tasks.context import CandidateSpec, SweepContext
from tasks.retry import transient_retries

#: The teacher compared with itself: what retention and the delta CI are by definition.
TEACHER_SELF = {
    "rougeL_retention": 1.0,
    "rougeL_delta": 0.0,
    "rougeL_delta_ci_low": 0.0,
    "rougeL_delta_ci_high": 0.0,
    "rougeL_retention_ci_low": 1.0,
    "rougeL_retention_ci_high": 1.0,
}


def model_config(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))


def candidate_metrics(
    spec: CandidateSpec, evaluation: StepResult, bench_model: dict, nash: dict, selection_batch: int
) -> dict:
    """Every number of the candidate run: quality, speed per batch size, size, sparsity."""
    from nash_core.benchmark import flat_metrics

    metrics = {**evaluation.meta["metrics"], **flat_metrics(bench_model)}
    if spec.is_teacher:
        metrics.update(TEACHER_SELF)
    metrics = with_headline(metrics, selection_batch)
    metrics["encoder_sparsity"] = float(nash.get("encoder_sparsity", 0.0))
    # served size: in-memory weights in the variant's precision; the source's files on disk
    metrics["weights_mb"] = float(bench_model["weights_mb"])
    if nash.get("unstructured"):
        metrics["unstructured_target"] = float(nash["unstructured"]["target"])
    return metrics


def _mask_picture(config: dict, out: Path, title: str) -> Path | None:
    """Heatmap of the kept encoder heads / FFN units of a pruned export (None if unpruned)."""
    from nash_core.report import mask_heatmap

    shapes = config.get("nash", {}).get("shapes")
    if not shapes:
        return None
    heads = config.get("num_heads") or config["encoder_attention_heads"]  # T5 / BART
    d_ff = config.get("d_ff") or config["encoder_ffn_dim"]
    return mask_heatmap(shapes, heads, d_ff, out, title)


@task(name="log-candidate", cache_policy=NO_CACHE, **transient_retries())
def log_candidate(
    ctx: SweepContext,
    spec: CandidateSpec,
    model: StepResult,
    evaluation: StepResult,
    bench: StepResult,
    trained: dict[str, StepResult],
    serving: dict,
) -> str:
    """Fill the candidate's run and finish it; returns its run id.

    ``trained`` maps a curve phase (``train``, ``stage``, ``finetune``) to the step that trained
    it; a step served from the cache had its curve logged by an earlier sweep, so it is
    replayed from the saved JSONL into this run.
    """
    client = tracking.make_client(ctx.tracking_uri)
    run_id = spec.run_id
    report = read_json(bench.meta["benchmark_json"])
    bench_model = next(m for m in report["models"] if m["name"] == spec.label)
    # an int8 variant is a marker dir: shapes, layers and the served weights are its source's
    weights_dir = model.meta.get("source_dir", model.meta["model_dir"])
    config = model_config(weights_dir)
    metrics = candidate_metrics(
        spec, evaluation, bench_model, config.get("nash", {}), ctx.cfg.selection.batch_size
    )
    metrics.update(zero_stats(weights_dir))  # params_nonzero, weight_zero_fraction
    served_dir = _served_dir(spec, model)
    if served_dir != Path(weights_dir):  # a conversion (ct2-int8...): its own files are served
        metrics["disk_mb"] = sum(f.stat().st_size for f in served_dir.rglob("*") if f.is_file())
        metrics["disk_mb"] /= 2**20
        if bench_model.get("load_rss_mb") is not None:
            metrics["load_rss_mb"] = bench_model["load_rss_mb"]
    else:
        metrics["disk_mb"] = (
            sum(f.stat().st_size for f in Path(weights_dir).glob("*.safetensors")) / 2**20
        )
    tracking.log_metrics(client, run_id, metrics)
    tracking.log_params(
        client,
        run_id,
        {
            "decoder_layers": bench_model["decoder_layers"],
            "encoder_layers": bench_model["encoder_layers"],
            "model_dir": model.meta["model_dir"],
            **{f"serving_{k}": v for k, v in model.meta.get("threads", {}).items()},
        },
    )

    for phase, step in trained.items():
        curve = step.meta.get("curves", {}).get(phase)
        if step.cached and curve:
            tracking.replay_curve(client, run_id, phase, Path(step.path) / curve)

    files = Path(ctx.workdir) / "sweeps" / ctx.sweep_run_id / spec.label
    single = atomic_write_json(
        files / "benchmark.json",
        {**{k: v for k, v in report.items() if k != "models"}, "model": bench_model},
    )
    eval_dir = Path(evaluation.meta["eval_dir"])
    tracking.log_files(
        client, run_id, [single, eval_dir / "metrics.json", eval_dir / "predictions_sample.csv"]
    )
    picture = _mask_picture(config, files / "mask.png", spec.label)
    if picture:
        tracking.log_files(client, run_id, [picture])
    log_candidate_model(
        client,
        run_id,
        served_dir,
        {**serving, "quantize": spec.precision} if spec.quantized else serving,
    )
    tracking.set_tags(
        client,
        run_id,
        {
            "nash.result_key": model.key,
            **{f"nash.cached.{p}": s.cached for p, s in trained.items()},
            "nash.model_dir": model.meta["model_dir"],
        },
    )
    tracking.finish_run(client, run_id)
    return run_id


def _served_dir(spec: CandidateSpec, model: StepResult) -> Path:
    """What the registered model carries: a runtime's own converted directory (ct2-int8...),
    else the PyTorch weights (a precision marker's source)."""
    from nash_core.runtimes import split_variant

    if spec.quantized and split_variant(spec.precision)[0].self_contained:
        return Path(model.meta["model_dir"])
    return Path(model.meta.get("source_dir", model.meta["model_dir"]))


@task(name="log-replicate", cache_policy=NO_CACHE, **transient_retries())
def log_replicate(
    ctx: SweepContext,
    spec: CandidateSpec,
    model: StepResult,
    evaluation: StepResult,
    trained: dict[str, StepResult],
) -> str:
    """Fill a seed replicate's run (``experiment.seeds``): its quality, shape and training
    curves -- no benchmark, no served model (its primary is the one timed and served)."""
    client = tracking.make_client(ctx.tracking_uri)
    config = model_config(model.meta["model_dir"])
    metrics = {
        **evaluation.meta["metrics"],
        "encoder_sparsity": float(config.get("nash", {}).get("encoder_sparsity", 0.0)),
    }
    tracking.log_metrics(client, spec.run_id, metrics)
    tracking.log_params(client, spec.run_id, {"model_dir": model.meta["model_dir"]})
    for phase, step in trained.items():
        curve = step.meta.get("curves", {}).get(phase)
        if step.cached and curve:
            tracking.replay_curve(client, spec.run_id, phase, Path(step.path) / curve)
    eval_dir = Path(evaluation.meta["eval_dir"])
    tracking.log_files(client, spec.run_id, [eval_dir / "metrics.json"])
    tracking.set_tags(
        client,
        spec.run_id,
        {"nash.result_key": model.key, "nash.replicate_of": spec.primary_label},
    )
    tracking.finish_run(client, spec.run_id)
    return spec.run_id
