"""A sweep's report read back from the MLflow store, and published onto the sweep run.

``load_report`` rebuilds :class:`nash_core.sweep_report.SweepReport` from what the sweep logged
(candidate runs' metrics, the sweep run's decision tags and config params), so ``nash report``
works on any store a sweep wrote to, local or a server (the sweep and its candidate rows are
read by :mod:`nash_mlflow.sweeps`). ``publish`` is the sweep's last step:
it records the hardware and base-model fingerprints on the sweep run, writes the saved views
(``nash_mlflow/views.py``), makes the run's description the Markdown report and logs the champion's
key numbers as metrics of the sweep run, so the experiment's table compares sweeps.

Imports mlflow, not prefect.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nash_core.io import atomic_write_text
from nash_core.selection import pareto_frontier
from nash_core.sweep_report import (
    SweepReport,
    hardware_summary,
    parse_rejected,
    parse_tied,
    to_html,
    to_markdown,
)
from nash_mlflow import tracking, views
from nash_mlflow.sweeps import SweepError, candidate_frame, find_sweep

DESCRIPTION = "mlflow.note.content"
PARETO = "pareto.png"
HARDWARE_TAG, HARDWARE_JSON_TAG, BASE_TAG = (
    "nash.hardware",
    "nash.hardware_json",
    "nash.base_fingerprint",
)


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text(encoding="utf-8")


def artifact_bytes(client: MlflowClient, run_id: str, path: str) -> bytes | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_bytes()


def load_report(client: MlflowClient, tracking_uri: str, run: Run) -> SweepReport:
    """The report of sweep ``run`` as the store holds it now."""
    tags, params = run.data.tags, run.data.params
    batch = int(params.get("selection.batch_size", 1))
    latency = f"{params.get('selection.latency_metric', 'latency_p50_ms')}_bs{batch}"
    table = candidate_frame(client, run.info.experiment_id, run.info.run_id)
    if table.empty:
        raise SweepError(
            f"sweep run '{run.info.run_id}' in {tracking_uri} has no candidate "
            "runs (was it interrupted before opening them?)"
        )
    if "rougeL" in table and latency in table:
        table["pareto"] = pareto_frontier(table, "rougeL", latency)
    try:
        hardware = json.loads(tags.get(HARDWARE_JSON_TAG, "{}"))
    except json.JSONDecodeError:
        hardware = {}
    decision = _artifact_text(client, run.info.run_id, "decision.txt") or ""
    registered = None
    if tags.get("nash.registered_model"):
        registered = (
            f"{tags['nash.registered_model']} version {tags.get('nash.registered_version')}"
        )
        if tags.get("nash.registered_alias"):
            registered += f" (@{tags['nash.registered_alias']})"
        if tags.get("nash.promotion.decision"):
            registered += (
                f"; promotion: {tags['nash.promotion.decision']} "
                f"({tags.get('nash.promotion.reason', '')})"
            )
    exp = client.get_experiment(run.info.experiment_id)
    started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
    champion = tags.get("nash.champion")
    return SweepReport(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id,
        experiment=exp.name if exp else run.info.experiment_id,
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        status=run.info.status,
        champion=champion or "(not selected: the sweep did not finish)",
        reason=tags.get("nash.decision_reason", "no decision recorded"),
        table=table,
        batch_size=batch,
        base_fingerprint=tags.get(BASE_TAG),
        hardware=hardware,
        registered=registered,
        rejected=parse_rejected(decision),
        tied=parse_tied(decision),
    )


def sweep_metrics(rep: SweepReport) -> dict[str, float]:
    """The numbers that make sweeps comparable row by row (``views.SWEEP_METRICS``)."""
    out: dict[str, float] = {"candidates": float(len(rep.table))}
    champ, teacher = rep.row(rep.champion), rep.teacher()
    for prefix, row in (("champion", champ), ("teacher", teacher)):
        if row is None:
            continue
        for name in ("rougeL", "latency_p50_ms", "params_total", "rougeL_retention", "speedup"):
            if prefix == "teacher" and name in ("rougeL_retention", "speedup", "params_total"):
                continue
            v = pd.to_numeric(row.get(name), errors="coerce")
            if pd.notna(v):
                out[f"{prefix}_{name}"] = float(v)
    if champ is not None:  # the interval the rule judged the champion's speed by
        for end in ("low", "high"):
            v = pd.to_numeric(champ.get(f"speedup_bs{rep.batch_size}_{end}"), errors="coerce")
            if pd.notna(v):
                out[f"champion_speedup_{end}"] = float(v)
    return out


# --------------------------------------------------------------------------- publishing
def publish(
    client: MlflowClient,
    tracking_uri: str,
    sweep_run_id: str,
    *,
    hardware: dict,
    base_fingerprint: str | None,
    chart_latency: str | None = None,
    out_dir: str | Path | None = None,
) -> SweepReport:
    """Fingerprints as tags, saved views, the Markdown description, the sweep's metrics.

    ``chart_latency``: the metric on the first chart's x axis (default: batch-1 p50 latency
    when batch 1 was benchmarked, else the selection's latency). ``out_dir``: also write
    ``report.md`` / ``report.html`` there and log them as artifacts.
    """
    tracking.set_tags(
        client,
        sweep_run_id,
        {
            HARDWARE_TAG: hardware_summary(hardware)[:5000],
            HARDWARE_JSON_TAG: json.dumps(hardware, sort_keys=True)[:7900],
            BASE_TAG: base_fingerprint,
        },
    )
    run = client.get_run(sweep_run_id)
    rep = load_report(client, tracking_uri, run)
    if chart_latency is None:
        bs1 = "latency_p50_ms_bs1"
        chart_latency = bs1 if bs1 in rep.table else f"latency_p50_ms_bs{rep.batch_size}"
    seeds = "rougeL_seeds" in rep.table and rep.table["rougeL_seeds"].notna().any()
    views.write_views(
        client,
        run.info.experiment_id,
        sweep_run_id,
        rep.run_name,
        rep.batch_size,
        chart_latency,
        bool(seeds),
    )
    has_plot = any(f.path == PARETO for f in client.list_artifacts(sweep_run_id))
    rep.links = relative_links(run.info.experiment_id, sweep_run_id)
    image = f"get-artifact?path={PARETO}&run_uuid={sweep_run_id}" if has_plot else None
    markdown = to_markdown(rep, image=image)
    tracking.set_tags(client, sweep_run_id, {DESCRIPTION: markdown})
    tracking.log_metrics(client, sweep_run_id, sweep_metrics(rep))
    if out_dir is not None:
        out = Path(out_dir)
        md = atomic_write_text(out / "report.md", markdown)
        png = artifact_bytes(client, sweep_run_id, PARETO) if has_plot else None
        page = atomic_write_text(out / "report.html", to_html(rep, png))
        tracking.log_files(client, sweep_run_id, [md, page])
    return rep


def relative_links(experiment_id: str, sweep_run_id: str) -> dict[str, str]:
    """Links for inside the UI (the description): relative, so they work on any host/port."""
    key = views.sweep_view_key(sweep_run_id)
    return {
        "trade-off table": views.view_url("", experiment_id, key).lstrip("/"),
        "trade-off charts": views.view_url("", experiment_id, key, charts=True).lstrip("/"),
        "all sweeps": views.view_url("", experiment_id, views.SWEEPS_KEY).lstrip("/"),
    }


# --------------------------------------------------------------------------- nash report
def report_main(
    tracking_uri: str | None,
    workdir: str | Path,
    run_id: str | None = None,
    *,
    markdown: str | None = None,
    html: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
) -> str:
    """``nash report``: the text to print; writes ``markdown`` / ``html`` files when asked.

    ``tracking_uri`` default: the workdir's store (``MLFLOW_TRACKING_URI`` when set). A local
    store that does not exist is an error, never silently created empty.
    """
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from nash_core.sweep_report import to_text

    uri = tracking_uri or tracking.default_tracking_uri(workdir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise SweepError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: run `nash run "
            "CONFIG` first, or pass --workdir / --tracking-uri"
        )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = find_sweep(client, uri, run_id)
    rep = load_report(client, uri, run)
    png = artifact_bytes(client, run.info.run_id, PARETO) if (markdown or html) else None
    written = []
    if markdown:
        md = Path(markdown)
        image = None
        if png:
            plot = md.with_name(f"{md.stem}-pareto.png")
            plot.parent.mkdir(parents=True, exist_ok=True)
            tmp = plot.with_name(f".{plot.name}.tmp")
            tmp.write_bytes(png)
            tmp.replace(plot)
            image = plot.name
        rep.links = views.sweep_links(
            uri, run.info.experiment_id, run.info.run_id, host=host, port=port
        )
        atomic_write_text(md, to_markdown(rep, image=image))
        written.append(str(md))
    rep.links = views.sweep_links(
        uri, run.info.experiment_id, run.info.run_id, host=host, port=port
    )
    if html:
        atomic_write_text(html, to_html(rep, png))
        written.append(str(html))
    text = to_text(rep)
    if not uri.startswith("http"):
        text += f"(links: serve the store with `nash ui`, store {uri})\n"
    return text + "".join(f"wrote {w}\n" for w in written)
