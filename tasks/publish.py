"""The sweep's last step: make its MLflow pages tell the answer (``sweep_report.publish``)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from nash_core.io import read_json
from nash_mlflow import tracking
from nash_mlflow.sweep_report import publish
from nash_mlflow.views import sweep_links
from tasks.cache import StepResult
from tasks.context import SweepContext
from tasks.retry import transient_retries
from tasks.sweep_runs import sweep_dir


@task(name="publish-report", cache_policy=NO_CACHE, **transient_retries())
def publish_report(ctx: SweepContext, bench: StepResult, base_fingerprint: str) -> dict[str, str]:
    """Description, sweep metrics and saved views of the sweep run; returns the links to print
    (``views.sweep_links``: the saved views, the sweep's page, the plain-URL fallback)."""
    client = tracking.make_client(ctx.tracking_uri)
    hardware = read_json(bench.meta["benchmark_json"]).get("hardware", {})
    rep = publish(
        client,
        ctx.tracking_uri,
        ctx.sweep_run_id,
        hardware=hardware,
        base_fingerprint=base_fingerprint,
        out_dir=sweep_dir(ctx),
    )
    links = sweep_links(ctx.tracking_uri, ctx.experiment_id, ctx.sweep_run_id)
    get_run_logger().info("%s; trade-off view: %s", rep.headline(), links["trade-off table"])
    local = (
        ""
        if ctx.tracking_uri.startswith("http")
        else f"\n\nServe the store first: `nash ui --workdir {ctx.workdir}`."
    )
    create_markdown_artifact(
        key="mlflow-tradeoff-views",
        description="The sweep's answer in the MLflow UI",
        markdown="## MLflow views\n\n"
        + "\n".join(f"- {k}: <{v}>" for k, v in links.items())
        + local,
    )
    return links
