"""The sweep's answer where users look: the run's Markdown report, the saved views of the MLflow
UI (read back through a real `mlflow server`'s REST API, as the UI reads them) and `nash report`
on the SQLite store of a real sweep."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

import pandas as pd
import pytest
from sweep_tiny import TINY, clean_env, free_port, nash, start_mlflow_server, with_overrides

from nash_core.selection import Decision
from nash_core.sweep_report import (
    SweepReport,
    parse_rejected,
    parse_tied,
    to_html,
    to_markdown,
    to_text,
)
from nash_mlflow.views import (
    SHARED_VIEW,
    SWEEPS_KEY,
    candidates_state,
    plain_url,
    sweep_links,
    sweep_view_key,
)

#: The URL parameters that make MLflow 3.17 ignore a saved view (its SEARCH_FACETS list).
SEARCH_FACETS = (
    "searchFilter",
    "orderByKey",
    "orderByAsc",
    "startTime",
    "lifecycleFilter",
    "modelVersionFilter",
    "datasetsFilter",
)


def _report(champion="nash-k2@0.3") -> SweepReport:
    table = pd.DataFrame(
        {
            "label": ["nash-k2@0.3", "teacher", "sft|k2"],
            "method": ["nash", "teacher", "sft"],
            "decoder_layers": [2, 6, 2],
            "encoder_sparsity": [0.27, 0.0, 0.0],
            "params_total": [2.32e6, 4.84e6, 2.74e6],
            "rougeL": [0.80, 0.86, 0.77],
            "rougeL_retention": [0.93, 1.0, 0.90],
            "rougeL_delta_ci_low": [-0.077, 0.0, -0.106],
            "rougeL_delta_ci_high": [-0.043, 0.0, -0.066],
            "latency_p50_ms": [101.3, 246.0, 117.2],
            "latency_p90_ms": [110.0, 260.0, 130.0],
            "speedup": [2.43, 1.0, 2.10],
            "cost_per_1k_requests": [0.0028, 0.0068, 0.0033],
            "pareto": [True, True, False],
        }
    )
    return SweepReport(
        run_id="abc123",
        run_name="demo-x",
        experiment="nash/demo",
        started="2026-12-01 10:00 UTC",
        status="FINISHED",
        champion=champion,
        reason="fastest of 1 qualifying",
        table=table,
        hardware={
            "cpu_model": "AMD EPYC",
            "cpu_cores_logical": 2,
            "torch_threads": 1,
            "torch_version": "2.13",
        },
        base_fingerprint="fp-1",
        rejected={"sft|k2": "retention 0.90 < 0.95"},
    )


def test_markdown_leads_with_the_decision_and_marks_the_champion():
    md = to_markdown(_report(), image="get-artifact?path=pareto.png&run_uuid=abc123")
    lines = md.splitlines()
    assert lines[0].startswith("### Champion: nash-k2@0.3 (2.43x faster at batch 1, keeps 93.0%")
    rows = [ln for ln in lines if ln.startswith("| ") and "---" not in ln]
    assert rows[0].startswith(
        "| candidate | method | decoder layers | encoder sparsity | params "
        "| ROUGE-L | retention | 95% CI of ROUGE-L delta | p50 ms (bs 1)"
    )
    # teacher first, then fastest first; the champion's row in bold; a "|" in a label escaped
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| teacher",
        "| **nash-k2@0.3** (champion)",
        "| sft\\|k2",
    ]
    assert "| **[-0.077, -0.043]** |" in rows[2] and "| **2.43x** |" in rows[2]
    assert (
        "![Pareto plot: ROUGE-L against latency](get-artifact?path=pareto.png&run_uuid=abc123)"
        in lines
    )
    assert any(ln.startswith("- **Teacher** (teacher): ROUGE-L 0.860") for ln in lines)
    assert any(
        ln.startswith("- **Champion** (nash-k2@0.3): ROUGE-L 0.800, retention 0.930")
        for ln in lines
    )
    assert "- **Hardware**: AMD EPYC, 2 logical cores, 1 torch thread; torch 2.13" in lines


def test_teacher_kept_says_so_everywhere():
    rep = _report(champion="teacher")
    assert rep.headline().startswith("Champion: teacher (no candidate met the selection policy")
    assert "**Champion**" not in to_markdown(rep)
    text = to_text(rep)
    assert "teacher *" in text and "rejected sft|k2: retention 0.90 < 0.95" in text
    page = to_html(rep, b"\x89PNG fake")
    assert '<tr class="champion"><td>teacher (champion)</td>' in page
    assert "sft|k2" in page and "data:image/png;base64," in page


def test_parse_rejected_reads_decision_text():
    text = "champion: x\nreason: r\nqualified: none\nrejected a@0.3: ret 0.9 < 0.95; x: y\n"
    assert parse_rejected(text) == {"a@0.3": "ret 0.9 < 0.95; x: y"}


def test_intervals_in_every_renderer_and_the_tie_marked():
    rep = _report()
    rep.table = rep.table.assign(
        latency_p50_ms_bs1_low=[99.0, 240.0, 114.5],
        latency_p50_ms_bs1_high=[104.0, 251.0, 119.0],
        speedup_bs1_low=[2.31, 1.0, 2.02],
        speedup_bs1_high=[2.52, 1.0, 2.33],
    )
    decision = Decision(
        "nash-k2@0.3",
        "r1",
        False,
        "tied",
        ["nash-k2@0.3", "sft|k2"],
        tied=["nash-k2@0.3", "sft|k2"],
        chosen_by="retention_low (higher retention lower bound: ...)",
    )
    rep.tied = parse_tied(decision.as_text())
    assert rep.tied == ["nash-k2@0.3", "sft|k2"]
    headers, rows = rep.cells()
    assert "p50 95% interval" in headers and "speedup 95% interval" in headers
    by = {r[0]: dict(zip(headers, r)) for r in rows}
    assert by["nash-k2@0.3"]["speedup 95% interval"] == "[2.31, 2.52]"
    assert by["nash-k2@0.3"]["p50 95% interval"] == "[99.0, 104.0]"
    assert by["teacher"]["speedup 95% interval"] == ""  # the reference of the ratio
    text = to_text(rep)
    assert "sft|k2 ~" in text and "~ tied on speed with it" in text and "nash-k2@0.3 *" in text
    assert "| sft\\|k2 (tied on speed) |" in to_markdown(rep)
    assert "sft|k2 (tied on speed)</td>" in to_html(rep)
    assert "speedup 2.43x [2.31, 2.52]" in rep.key_numbers("nash-k2@0.3")
    # a sweep logged before the intervals existed: no interval columns, nothing tied
    assert "speedup 95% interval" not in _report().cells()[0]
    assert parse_tied("champion: x\nreason: r\n") == []


def test_view_links_carry_no_search_facet():
    """MLflow 3.17 ignores a saved view when the URL also has a search facet."""
    links = sweep_links("sqlite:////x/mlflow.db", "7", "r1", port=5001)
    for name in ("trade-off table", "trade-off charts", "all sweeps"):
        query = urllib.parse.parse_qs(links[name].split("?", 1)[1])
        assert not set(query) & set(SEARCH_FACETS), links[name]
        assert query["workflowType"] == ["machine_learning"]
        assert links[name].startswith("http://127.0.0.1:5001/#/experiments/7/runs?")
    assert "compareRunsMode=CHART" in links["trade-off charts"]
    for name, link in links.items():  # every printed link opens the model-training layout
        assert urllib.parse.parse_qs(link.split("?", 1)[1])["workflowType"] == [
            "machine_learning"
        ], name
    assert links["sweep report"].startswith("http://127.0.0.1:5001/#/experiments/7/runs/r1?")
    fallback = urllib.parse.parse_qs(plain_url("http://h:1", "7", "r1").split("?", 1)[1])
    assert fallback["searchFilter"] == ["tags.`mlflow.parentRunId` = 'r1'"]
    assert fallback["orderByKey"] == ["metrics.`rougeL`"]


def test_candidates_state_first_chart_is_rougeL_vs_latency():
    state = candidates_state("r1", 1, "latency_p50_ms_bs1")
    first = state["compareRunCharts"][0]
    assert first["type"] == "SCATTER"
    assert first["xaxis"] == {"key": "latency_p50_ms_bs1", "type": "METRIC"}
    assert first["yaxis"] == {"key": "rougeL", "type": "METRIC"}
    assert state["compareRunSections"][0]["uuid"] == first["metricSectionId"]
    sections = {s["uuid"] for s in state["compareRunSections"]}
    assert all(c["metricSectionId"] in sections for c in state["compareRunCharts"])


# --------------------------------------------------------------------------- a real sweep
def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200, url
        return r.read()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A TINY sweep (teacher + SFT) into a SQLite store, then `mlflow server` on that store."""
    tmp = tmp_path_factory.mktemp("report")
    # a busy 2-core machine can take minutes to start Prefect's temporary server
    env = clean_env(tmp, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600")
    overrides = [*TINY, "benchmark.price_per_hour=0.1"]  # TINY's benchmark block has no price
    res = nash(
        ["run", "configs/smoke.yaml", "--workdir", tmp / "work", *with_overrides(overrides)],
        env,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    db = tmp / "work" / "mlflow.db"
    port = free_port()
    server = start_mlflow_server(db, port, tmp / "server.log", env)
    base = f"http://127.0.0.1:{port}"
    try:
        yield {"tmp": tmp, "env": env, "stdout": res.stdout, "base": base, "db": db}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _api(base: str, path: str, **query) -> dict:
    return json.loads(_get(f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"))


def _search(base: str, experiment_id: str, filter_string: str) -> list[dict]:
    """POST runs/search, as MLflow's UI calls it."""
    body = json.dumps(
        {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}
    ).encode()
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read()).get("runs", [])


@pytest.mark.slow
def test_saved_view_as_the_server_returns_it(swept):
    base = swept["base"]
    exp = _api(base, "experiments/get-by-name", experiment_name="nash/demo/demo-dialogues")[
        "experiment"
    ]
    tags = {t["key"]: t["value"] for t in exp["tags"]}
    sweep = _search(base, exp["experiment_id"], "tags.`nash.kind` = 'sweep'")[0]
    sid = sweep["info"]["run_id"]
    key = sweep_view_key(sid)

    # the link `nash run` printed opens exactly this view
    printed = dict(re.findall(r"^([a-z -]+):\s+(http\S+)$", swept["stdout"], re.M))
    assert f"viewStateShareKey={key}&workflowType=machine_learning" in printed["trade-off table"]
    assert set(printed) >= {
        "trade-off table",
        "trade-off charts",
        "sweep report",
        "all sweeps",
        "without the saved view",
    }

    # the envelope as MLflow's UI validates it: string name, number createdAt, string state
    view = json.loads(tags[SHARED_VIEW + key])
    assert isinstance(view["name"], str) and isinstance(view["createdAt"], int)
    assert isinstance(view["state"], str)
    state = json.loads(view["state"])
    assert state["searchFilter"] == (
        f"tags.`mlflow.parentRunId` = '{sid}' and tags.`nash.kind` = 'candidate'"
    )
    assert state["runsHiddenMode"] == "SHOW_ALL"
    assert state["compareRunCharts"][0]["type"] == "SCATTER"
    assert state["compareRunCharts"][0]["xaxis"]["key"] == "latency_p50_ms_bs1"
    assert state["compareRunCharts"][0]["yaxis"]["key"] == "rougeL"

    # the view's filter finds every candidate, and each column names what those runs logged
    cands = _search(base, exp["experiment_id"], state["searchFilter"])
    assert sorted(r["info"]["run_name"] for r in cands) == ["sft-k1", "teacher"]
    for run in cands:
        logged = {
            "metrics": {m["key"] for m in run["data"]["metrics"]},
            "params": {p["key"] for p in run["data"]["params"]},
            "tags": {t["key"] for t in run["data"]["tags"]},
        }
        for column in state["selectedColumns"]:
            kind, name = re.fullmatch(r"(\w+)\.`(.+)`", column).groups()
            assert name in logged[kind], (column, run["info"]["run_name"])
        # the speed intervals next to the point values, per batch size and at the headline
        assert {"speedup_low", "speedup_high", "latency_p50_ms_low", "bench_rounds_bs1"} <= (
            logged["metrics"]
        ), run["info"]["run_name"]
        for chart in state["compareRunCharts"]:
            for axis in ("xaxis", "yaxis"):
                if axis in chart:
                    assert chart[axis]["key"] in logged["metrics"], chart
            if "metricKey" in chart:
                assert chart["metricKey"] in logged["metrics"], chart

    # the experiment-wide view lists sweeps with the champion's numbers, logged on the sweep run
    sweeps_state = json.loads(json.loads(tags[SHARED_VIEW + SWEEPS_KEY])["state"])
    sweep_metrics = {m["key"] for m in sweep["data"]["metrics"]}
    for column in sweeps_state["selectedColumns"]:
        kind, name = re.fullmatch(r"(\w+)\.`(.+)`", column).groups()
        if kind == "metrics":
            assert name in sweep_metrics, column


@pytest.mark.slow
def test_description_renders_from_the_store(swept):
    base = swept["base"]
    exp = _api(base, "experiments/get-by-name", experiment_name="nash/demo/demo-dialogues")[
        "experiment"
    ]
    sweep = _search(base, exp["experiment_id"], "tags.`nash.kind` = 'sweep'")[0]
    sid = sweep["info"]["run_id"]
    tags = {t["key"]: t["value"] for t in sweep["data"]["tags"]}
    md = tags["mlflow.note.content"]
    champion = tags["nash.champion"]
    assert md.startswith(f"### Champion: {champion}")
    assert f"**Decision.** {tags['nash.decision_reason'][:40]}" in md
    assert f"| **{champion}** (champion) |" in md
    assert "| teacher |" in md or champion == "teacher"
    assert f"- **Base model fingerprint**: `{tags['nash.base_fingerprint']}`" in md
    assert "- **Hardware**: " in md and "torch thread" in md
    # the inline plot: the description's relative link, resolved against the UI, is a PNG
    image = re.search(r"!\[[^\]]*\]\((get-artifact\?[^)]+)\)", md).group(1)
    assert image == f"get-artifact?path=pareto.png&run_uuid={sid}"
    assert _get(f"{base}/{image}").startswith(b"\x89PNG")
    metrics = {m["key"]: m["value"] for m in sweep["data"]["metrics"]}
    assert metrics["candidates"] == 2 and metrics["teacher_rougeL"] >= 0
    if champion == "teacher":
        assert metrics["champion_speedup"] == 1.0


@pytest.mark.slow
def test_nash_report_on_the_sqlite_store(swept):
    tmp, env = swept["tmp"], swept["env"]
    res = nash(
        [
            "report",
            "--workdir",
            tmp / "work",
            "--markdown",
            tmp / "share" / "r.md",
            "--html",
            tmp / "share" / "r.html",
        ],
        env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout.splitlines()
    assert out[0].startswith("sweep smoke-") and out[1].startswith("Champion: ")
    assert out[2].startswith("reason: ")
    header = next(ln for ln in out if ln.startswith("candidate "))
    for column in (
        "ROUGE-L",
        "retention",
        "p50 ms (bs 1)",
        "p90 ms (bs 1)",
        "speedup",
        "cost / 1k requests",
        "95% CI of ROUGE-L delta",
    ):
        assert column in header
    rows = [ln.split()[0] for ln in out[out.index(header) + 2 :] if ln and not ln.startswith("*")]
    assert rows[:2] == ["teacher", "sft-k1"]
    assert sum(ln.rstrip().split("  ")[0].endswith(" *") for ln in out) == 1  # one champion
    assert any(ln.startswith("hardware: ") for ln in out)
    assert "wrote" in res.stdout and (tmp / "share" / "r-pareto.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp / "share" / "r.md").read_text()
    assert "](r-pareto.png)" in md and "(champion)" in md
    assert "data:image/png;base64," in (tmp / "share" / "r.html").read_text()

    # the same report through the server, by run id (a candidate's id leads to its sweep)
    sid = re.search(r"\(run ([0-9a-f]+),", out[0]).group(1)
    via = nash(["report", "--tracking-uri", swept["base"], "--run-id", sid], env)
    assert via.returncode == 0, via.stderr[-2000:]
    assert via.stdout.splitlines()[:12] == res.stdout.splitlines()[:12]


@pytest.mark.slow
def test_nash_report_unknown_run_exits_2_with_one_line(swept):
    tmp, env = swept["tmp"], swept["env"]
    res = nash(["report", "--workdir", tmp / "work", "--run-id", "0123456789abcdef"], env)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [
        f"nash: error: no run '0123456789abcdef' in the MLflow store sqlite:///{swept['db']}: pass "
        "the run id `nash run` printed (or --tracking-uri / --workdir of the store it used)"
    ]
    missing = nash(["report", "--workdir", tmp / "nowhere"], env)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    assert missing.stderr.startswith("nash: error: no MLflow store at ")
    assert not (tmp / "nowhere" / "mlflow.db").exists()
