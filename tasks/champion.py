"""Prefect tasks after the measurements: choose the champion, write the sweep report, register.

The candidate table is read back from MLflow (:mod:`nash_mlflow.sweeps`), not from task results:
the selection sees exactly what a user sees in the UI.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nash_core.report import QUALITY, to_markdown, write_decision
from nash_core.selection import latency_column
from nash_mlflow import tracking
from nash_mlflow.registry import register_champion
from nash_mlflow.sweeps import candidate_frame
from tasks.context import SweepContext
from tasks.retry import transient_retries


def candidate_table(ctx: SweepContext) -> pd.DataFrame:
    """One row per candidate run of this sweep (:func:`nash_mlflow.sweeps.candidate_frame`)."""
    client = tracking.make_client(ctx.tracking_uri)
    return candidate_frame(client, ctx.experiment_id, ctx.sweep_run_id)


@task(name="select-champion", cache_policy=NO_CACHE, **transient_retries())
def select_champion(ctx: SweepContext) -> dict:
    """Apply the selection policy, log decision + trade-off table + Pareto plot on the sweep run."""
    cfg = ctx.cfg
    client = tracking.make_client(ctx.tracking_uri)
    table = candidate_table(ctx)
    latency = latency_column(cfg.selection)
    out = Path(ctx.workdir) / "sweeps" / ctx.sweep_run_id
    written = write_decision(table, cfg.selection, out, cfg.experiment.name)
    decision, trade = written.decision, written.tradeoff
    tracking.log_files(client, ctx.sweep_run_id, written.files)
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
        "tradeoff_csv": str(written.files[0]),
        "pareto_png": str(written.files[2]),
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
