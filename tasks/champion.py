"""Prefect tasks after the measurements: choose the champion, write the sweep report, register.

The candidate table is read back from MLflow (``mlflow.search_runs``), not from task results:
the selection sees exactly what a user sees in the UI.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nash_core.io import atomic_write_text
from nash_core.report import pareto_plot, to_markdown, tradeoff_table, write_tradeoff
from nash_core.selection import Decision, choose_champion, latency_column, pareto_frontier
from nash_mlflow import tracking
from nash_mlflow.registry import register_champion
from tasks.context import SweepContext
from tasks.retry import transient_retries

QUALITY = "rougeL"
_COLUMNS = {
    "run_id": "run_id",
    f"tags.{tracking.LABEL}": "label",
    f"tags.{tracking.METHOD}": "method",
    "tags.nash.result_key": "result_key",
    "params.decoder_layers": "decoder_layers",
    "params.target_sparsity": "target_sparsity",
    "params.stage": "stage",
}


def candidate_table(ctx: SweepContext) -> pd.DataFrame:
    """One row per candidate run of this sweep; metric columns without their ``metrics.``."""
    mlflow.set_tracking_uri(ctx.tracking_uri)
    runs = mlflow.search_runs(
        experiment_ids=[ctx.experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{ctx.sweep_run_id}' "
            f"and tags.`{tracking.KIND}` = 'candidate'"
        ),
    )
    metrics = {c: c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")}
    table = runs[[*(c for c in _COLUMNS if c in runs.columns), *metrics]]
    return table.rename(columns={**_COLUMNS, **metrics})


@task(name="select-champion", cache_policy=NO_CACHE, **transient_retries())
def select_champion(ctx: SweepContext) -> dict:
    """Apply the selection policy, log decision + trade-off table + Pareto plot on the sweep run."""
    cfg = ctx.cfg
    client = tracking.make_client(ctx.tracking_uri)
    table = candidate_table(ctx)
    latency = latency_column(cfg.selection)
    decision: Decision = choose_champion(table, cfg.selection)
    frontier = pareto_frontier(table, QUALITY, latency)

    out = Path(ctx.workdir) / "sweeps" / ctx.sweep_run_id
    trade = tradeoff_table(table, latency, frontier, decision.label)
    csv, md = write_tradeoff(trade, out)
    plot = pareto_plot(
        table,
        QUALITY,
        latency,
        frontier,
        decision.label,
        out / "pareto.png",
        title=f"{cfg.experiment.name}: {QUALITY} vs {latency}",
    )
    text = atomic_write_text(out / "decision.txt", decision.as_text())
    tracking.log_files(client, ctx.sweep_run_id, [csv, md, plot, text])
    tracking.set_tags(
        client,
        ctx.sweep_run_id,
        {
            "nash.champion": decision.label,
            "nash.champion_run_id": decision.run_id,
            "nash.champion_is_teacher": decision.is_teacher,
            "nash.decision_reason": decision.reason[:5000],
        },
    )
    tracking.set_tags(client, decision.run_id, {"nash.champion": "true"})
    champ = table[table["label"] == decision.label].iloc[0]
    create_markdown_artifact(
        key="nash-sweep-report",
        description="Candidates, Pareto frontier and the champion",
        markdown=f"## Champion: {decision.label}\n\n{decision.reason}\n\n{to_markdown(trade)}",
    )
    return {
        "label": decision.label,
        "run_id": decision.run_id,
        "is_teacher": decision.is_teacher,
        "reason": decision.reason,
        "result_key": champ.get("result_key"),
        "metrics": {
            k: float(champ[k])
            for k in (QUALITY, "rougeL_retention", latency, "speedup")
            if pd.notna(champ.get(k))
        },
        "tradeoff_csv": str(csv),
        "pareto_png": str(plot),
    }


@task(name="register-champion", cache_policy=NO_CACHE, **transient_retries())
def register(ctx: SweepContext, champion: dict, base_fingerprint: str) -> str | None:
    """Register the champion's pyfunc model (previous versions stay); the aliases are moved by
    the promotion gate (tasks/promotion.py)."""
    cfg = ctx.cfg
    if not cfg.registry.enabled:
        return None
    client = tracking.make_client(ctx.tracking_uri)
    tags = {f"metric.{k}": v for k, v in champion["metrics"].items()}
    tags.update(
        {
            "nash.label": champion["label"],
            "nash.base_fingerprint": base_fingerprint,
            "nash.sweep_run_id": ctx.sweep_run_id,
            "nash.config_name": cfg.experiment.name,
            "nash.decision_reason": champion["reason"][:5000],
        }
    )
    version = register_champion(
        client, cfg.registered_model_name(), champion["run_id"], None, tags, champion["result_key"]
    )
    tracking.set_tags(
        client,
        ctx.sweep_run_id,
        {"nash.registered_model": cfg.registered_model_name(), "nash.registered_version": version},
    )
    return version
