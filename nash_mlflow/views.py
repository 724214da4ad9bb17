"""What the MLflow UI opens on: saved views of a sweep and the links to them.

MLflow 3.17's experiment page loads a *saved view* from the experiment tag
``mlflow.sharedViewState.<key>`` when the URL carries ``viewStateShareKey=<key>``. The tag holds
``{"name", "createdAt", "updatedAt", "state"}``; ``state`` is a JSON string with the search
facets (``searchFilter``, ``orderByKey``, ``orderByAsc``) and the table/chart state
(``selectedColumns``, ``columnOrder``, ``runsHiddenMode``, ``compareRunCharts`` +
``compareRunSections``). The page ignores the view when the URL also carries a search facet, so
the view's link carries none. ``workflowType=machine_learning`` forces the "Model training" page
(MLflow otherwise opens what this browser last used, GenAI by default);
``compareRunsMode=CHART`` opens the chart view instead of the table.

Every sweep writes two views (``write_views``):
- ``nash-sweep-<sweep run id>``: that sweep's candidates, one row each, the trade-off columns,
  ordered by ROUGE-L; its charts start with ROUGE-L against batch-1 latency;
- ``nash-sweeps``: one row per sweep of the experiment, the champion's numbers side by side.

Imports mlflow, not prefect (``nash report`` and ``nash ui`` use it).
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

from mlflow.tracking import MlflowClient

SHARED_VIEW = "mlflow.sharedViewState."
SWEEPS_KEY = "nash-sweeps"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: Metrics the publish step logs on each sweep run (``nash_mlflow/sweep_report.sweep_metrics``).
SWEEP_METRICS = (
    "champion_speedup",
    "champion_speedup_low",
    "champion_speedup_high",
    "champion_rougeL_retention",
    "champion_rougeL",
    "champion_latency_p50_ms",
    "champion_params_total",
    "teacher_rougeL",
    "teacher_latency_p50_ms",
    "candidates",
)


def sweep_view_key(sweep_run_id: str) -> str:
    return f"nash-sweep-{sweep_run_id}"


def col(kind: str, name: str) -> str:
    """A column key as the runs table names it: ``metrics.`rougeL```."""
    return f"{kind}.`{name}`"


#: Column ids of the two attribute columns the runs table always shows (MLflow sizes them
#: itself: about 190 + 145 px).
RUN_NAME, CREATED = "tags.`mlflow.runName`", "runDateAndNestInfo"
#: Widths (px) chosen so that in a 1600 px window, MLflow's side bar open, the quality, speed
#: and confidence columns plus the decoder depth and encoder sparsity show without scrolling
#: sideways; a header wider than its column is cut ("latency_p50_..."), hovering shows it whole.
_WIDTHS = {
    RUN_NAME: 150,
    CREATED: 110,
    "nash.method": 75,
    "decoder_layers": 100,
    "encoder_sparsity": 110,
    "params_total": 92,
    "rougeL": 75,
    "rougeL_retention": 100,
    "rougeL_delta_ci_low": 130,
    "rougeL_delta_ci_high": 132,
    "latency_p50_ms": 100,
    "latency_p90_ms": 100,
    "speedup": 88,
    "speedup_low": 110,
    "speedup_high": 112,
    "latency_p50_ms_low": 130,
    "latency_p50_ms_high": 132,
    "cost_per_1k_requests": 150,
    "quantization": 95,
    "params_nonzero": 115,
    "weight_zero_fraction": 150,
    "weights_mb": 95,
}


def _width(column: str) -> int:
    name = column.split(".", 1)[1].strip("`") if "`" in column else column
    return _WIDTHS.get(column, _WIDTHS.get(re.sub(r"_bs\d+(?=$|_low$|_high$)", "", name), 100))


#: The aggregate over experiment.seeds, shown in the view of a sweep that has it.
SEED_COLUMNS = ("rougeL_seeds", "rougeL_seeds_std", "rougeL_retention_seeds_ci_low")


def candidate_columns(batch_size: int, seeds: bool = False) -> list[str]:
    """The trade-off columns, the answer first: quality and speed with the speed's intervals,
    the confidence interval of the quality loss, then what the candidate is (its run name
    already says method, depth and target: ``nash-k2@0.3``), its size and cost."""
    bs = f"_bs{batch_size}"
    return [
        col("metrics", "rougeL"),
        col("metrics", "rougeL_retention"),
        col("metrics", f"latency_p50_ms{bs}"),
        col("metrics", f"speedup{bs}"),
        # the intervals over benchmark rounds (docs/decisions.md): the rule ranks on these
        col("metrics", f"speedup{bs}_low"),
        col("metrics", f"speedup{bs}_high"),
        col("metrics", f"latency_p50_ms{bs}_low"),
        col("metrics", f"latency_p50_ms{bs}_high"),
        col("metrics", f"latency_p90_ms{bs}"),
        col("metrics", "rougeL_delta_ci_low"),
        col("metrics", "rougeL_delta_ci_high"),
        # experiment.seeds: the recipe trained again (only where the sweep has several seeds)
        *(col("metrics", c) for c in (SEED_COLUMNS if seeds else ())),
        col("params", "decoder_layers"),
        col("metrics", "encoder_sparsity"),
        col("metrics", "params_total"),
        col("tags", "nash.method"),
        col("metrics", f"cost_per_1k_requests{bs}"),
        # what a structure x precision sweep (magnitude arms, benchmark.variants) differs in
        col("params", "quantization"),
        col("metrics", "params_nonzero"),
        col("metrics", "weight_zero_fraction"),
        col("metrics", "weights_mb"),
    ]


def _scatter(uuid: str, section: str, x: str, y: str) -> dict:
    return {
        "uuid": uuid,
        "type": "SCATTER",
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "displayName": f"{y} vs {x}",
        "xaxis": {"key": x, "type": "METRIC"},
        "yaxis": {"key": y, "type": "METRIC"},
    }


def _bar(uuid: str, section: str, metric: str) -> dict:
    return {
        "uuid": uuid,
        "type": "BAR",
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "metricKey": metric,
        "displayName": metric,
    }


def _section(uuid: str, name: str, columns: int = 3, height: int = 360) -> dict:
    """A chart section; ``columns`` cards per row, ``height`` px each (MLflow: 3 and 360)."""
    return {
        "uuid": uuid,
        "name": name,
        "display": True,
        "isReordered": False,
        "deleted": False,
        "isGenerated": False,
        "columns": columns,
        "cardHeight": height,
    }


def candidates_state(
    sweep_run_id: str, batch_size: int, chart_latency: str, seeds: bool = False
) -> dict:
    """The saved state of one sweep's candidate view (see the module docstring); ``seeds``:
    the sweep's candidates carry an aggregate over experiment.seeds."""
    main, more = "nash-tradeoff", "nash-tradeoff-more"
    charts = [
        _scatter("nash-rougeL-vs-latency", main, chart_latency, "rougeL"),
        _scatter("nash-rougeL-vs-params", more, "params_total", "rougeL"),
        _scatter("nash-rougeL-vs-weights-mb", more, "weights_mb", "rougeL"),
        _bar("nash-speedup", more, f"speedup_bs{batch_size}"),
        _bar("nash-retention", more, "rougeL_retention"),
    ]
    columns = candidate_columns(batch_size, seeds)
    order = [CREATED, RUN_NAME, *columns]  # MLflow pins these two on the left anyway
    return {
        "searchFilter": (
            f"tags.`mlflow.parentRunId` = '{sweep_run_id}' and tags.`nash.kind` = 'candidate'"
        ),
        "orderByKey": col("metrics", "rougeL"),
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": order,
        "columnWidths": {c: _width(c) for c in order},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [
            _section(main, f"Trade-off: ROUGE-L vs {chart_latency}", columns=1, height=500),
            _section(more, "Size, speedup, retention"),
        ],
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
        "runListHidden": False,
        "viewMaximized": False,
        "useGroupedValuesInCharts": True,
        "groupBy": None,
    }


def sweeps_state() -> dict:
    """The saved state of the experiment's sweep-by-sweep view."""
    section = "nash-sweeps"
    columns = [
        col("tags", "nash.champion"),
        col("tags", "nash.base_fingerprint"),
        col("tags", "nash.hardware"),
        *(col("metrics", m) for m in SWEEP_METRICS),
    ]
    return {
        "searchFilter": "tags.`nash.kind` = 'sweep'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [
            _scatter(
                "nash-sweeps-speed-quality",
                section,
                "champion_speedup",
                "champion_rougeL_retention",
            ),
            _bar("nash-sweeps-speedup", section, "champion_speedup"),
        ],
        "compareRunSections": [_section(section, "Sweeps")],
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
    }


def envelope(name: str, state: dict, created_ms: int | None = None) -> str:
    """The experiment tag value MLflow's UI reads (``state`` as a JSON *string*)."""
    now = int(time.time() * 1000) if created_ms is None else created_ms
    return json.dumps(
        {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    )


def write_views(
    client: MlflowClient,
    experiment_id: str,
    sweep_run_id: str,
    sweep_name: str,
    batch_size: int,
    chart_latency: str,
    seeds: bool = False,
) -> dict[str, str]:
    """Write (or refresh) both saved views on the experiment; returns ``{name: key}``."""
    views = {
        f"NASH sweep {sweep_name}: candidates": (
            sweep_view_key(sweep_run_id),
            candidates_state(sweep_run_id, batch_size, chart_latency, seeds),
        ),
        "NASH sweeps: champion per sweep": (SWEEPS_KEY, sweeps_state()),
    }
    for name, (key, state) in views.items():
        client.set_experiment_tag(experiment_id, SHARED_VIEW + key, envelope(name, state))
    client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    return {name: key for name, (key, _) in views.items()}


# --------------------------------------------------------------------------- links
def ui_base(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """The UI's address: the tracking server itself, or where ``nash ui`` serves a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://{host}:{port}"


def view_url(base: str, experiment_id: str, key: str, charts: bool = False) -> str:
    """Open a saved view in the model-training page (table, or ``charts=True`` the charts)."""
    mode = "&compareRunsMode=CHART" if charts else ""
    return (
        f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={quote(key)}"
        f"&workflowType=machine_learning{mode}"
    )


def plain_url(base: str, experiment_id: str, sweep_run_id: str) -> str:
    """Fallback without the saved view: this sweep's candidates, flat, best ROUGE-L first
    (the columns are then the UI's defaults; add them with "Columns")."""
    flt = quote(f"tags.`mlflow.parentRunId` = '{sweep_run_id}'", safe="'")
    return (
        f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&searchFilter={flt}&orderByKey={quote(col('metrics', 'rougeL'))}&orderByAsc=false"
    )


def run_page_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page, in the model-training layout like every other printed link."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def sweep_links(
    tracking_uri: str,
    experiment_id: str,
    sweep_run_id: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
) -> dict[str, str]:
    """Every link a command prints for a sweep, in the order it prints them."""
    base = ui_base(tracking_uri, host, port)
    key = sweep_view_key(sweep_run_id)
    return {
        "trade-off table": view_url(base, experiment_id, key),
        "trade-off charts": view_url(base, experiment_id, key, charts=True),
        "sweep report": run_page_url(base, experiment_id, sweep_run_id),
        "all sweeps": view_url(base, experiment_id, SWEEPS_KEY),
        "without the saved view": plain_url(base, experiment_id, sweep_run_id),
    }


def format_links(links: dict[str, str]) -> str:
    """The lines ``nash run`` / ``watch`` / ``ui`` print: the trade-off view first."""
    width = max(len(k) for k in links) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {v}" for k, v in links.items())


def latest_sweep_links(
    tracking_uri: str, host: str = "127.0.0.1", port: int = 5000
) -> dict[str, str] | None:
    """Links of the store's latest sweep (for ``nash ui``), or None when it has none."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = (
        client.search_runs(
            exps,
            "tags.`nash.kind` = 'sweep'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if exps
        else []
    )
    if not runs:
        return None
    run = runs[0]
    shown = "127.0.0.1" if _unspecified(host) else host  # a wildcard bind: link to loopback
    return sweep_links(tracking_uri, run.info.experiment_id, run.info.run_id, host=shown, port=port)


def _unspecified(host: str) -> bool:
    """True for a wildcard listen address (IPv4 or IPv6 "any"), which a browser cannot open."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return False
