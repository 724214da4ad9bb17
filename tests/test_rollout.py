"""From sweep to serving on a real SQLite store, with the `nash` commands a user runs:
re-benchmark a sweep under another hardware name, a champion per hardware, challenger before
champion (a passing and a failing promotion gate), rollback, and serving what rollback restored.

One module-scoped sweep is shared; the gate test runs two more sweeps on the same store."""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sweep_tiny import BIN, REPO, TINY, clean_env, free_port, model_server, nash, with_overrides

from nash_cli.main import main

NAME = "nash-smoke"
#: TINY with a teacher that learns enough for quality to be compared (ROUGE-L well above 0).
QUALITY = TINY + ["teacher.train.max_steps=40"]
#: the base model changes (another demo recipe: new fingerprint), nothing else
CHANGED = ["model.demo.dropout_rate=0.05"]


def _sweeps(client, exp_id):
    runs = client.search_runs(
        [exp_id], "tags.`nash.kind` = 'sweep'", order_by=["attributes.start_time ASC"]
    )
    return runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rollout")
    env = clean_env(tmp)
    work = tmp / "work"
    res = nash(["run", "configs/smoke.yaml", "--workdir", work, *with_overrides(QUALITY)], env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "promotion: promoted (no champion yet" in res.stdout, res.stdout
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("nash/demo/demo-dialogues")
    (sweep,) = _sweeps(client, exp.experiment_id)
    return SimpleNamespace(
        tmp=tmp,
        env=env,
        work=work,
        uri=uri,
        client=client,
        exp=exp.experiment_id,
        sweep=sweep.info.run_id,
    )


def alias(s, name: str) -> str:
    return str(s.client.get_model_version_by_alias(NAME, name).version)


def candidates(s):
    return s.client.search_runs([s.exp], f"tags.`mlflow.parentRunId` = '{s.sweep}'")


def snapshot(s) -> dict:
    """Everything a command could write: runs' metrics, tags and artifacts, the registry."""
    out = {}
    for r in s.client.search_runs([s.exp]):
        arts = sorted(a.path for a in s.client.list_artifacts(r.info.run_id))
        out[r.info.run_id] = (dict(r.data.metrics), dict(r.data.tags), arts)
    for m in s.client.search_registered_models():
        out[m.name] = (
            dict(m.tags),
            dict(m.aliases),
            len(s.client.search_model_versions(f"name='{m.name}'")),
        )
    return out


def test_benchmark_sweep_on_other_hardware_then_a_champion_for_it(store):
    s = store
    before = {r.info.run_id: dict(r.data.metrics) for r in candidates(s)}
    res = nash(
        [
            "benchmark",
            "--sweep",
            s.sweep,
            "--workdir",
            s.work,
            "--hardware-name",
            "box-b",
            "--price-per-hour",
            "2.5",
        ],
        s.env,
    )  # a separate process, as on another machine
    assert res.returncode == 0, res.stderr[-3000:]
    assert "hardware 'box-b'" in res.stdout

    after = {r.info.run_id: r for r in candidates(s)}
    assert set(after) == set(before) and len(after) == 2  # teacher + sft-k1
    for run_id, run in after.items():
        m = run.data.metrics
        for key, value in before[run_id].items():
            assert m[key] == value, f"original metric {key} changed"
        assert m["hw/box-b/latency_p50_ms_bs1"] > 0 and m["hw/box-b/cost_per_1k_requests"] > 0
        assert m["hw/box-b/latency_p50_ms"] == m["hw/box-b/latency_p50_ms_bs1"]
        assert "nash.hardware.box-b" in run.data.tags
        history = s.client.get_metric_history(run_id, "latency_p50_ms_bs1")
        assert len(history) == 1, "the sweep's own latency was logged again"
    teacher = next(r for r in after.values() if r.data.tags["nash.method"] == "teacher")
    assert teacher.data.metrics["hw/box-b/speedup_bs1"] == pytest.approx(1.0)

    sweep_arts = {a.path for a in s.client.list_artifacts(s.sweep, "hardware/box-b")}
    assert {
        f"hardware/box-b/{f}"
        for f in ("tradeoff.md", "tradeoff.csv", "pareto.png", "benchmark.json", "decision.txt")
    } <= sweep_arts
    bench = json.loads(
        Path(
            s.client.download_artifacts(s.sweep, "hardware/box-b/benchmark.json", str(s.tmp))
        ).read_text()
    )
    assert bench["hardware"]["hardware_name"] == "box-b"
    assert bench["hardware"]["cpu_model"] and bench["settings"]["price_per_hour"] == 2.5
    assert bench["settings"]["inputs"] == "2 test sources"  # the sweep's inputs, as recorded

    res = nash(["select", "--sweep", s.sweep, "--hardware", "box-b", "--workdir", s.work], s.env)
    assert res.returncode == 0, res.stderr[-3000:]
    version = s.client.get_model_version_by_alias(NAME, "champion-box-b")
    assert version.run_id in after
    moves = [
        json.loads(v)
        for k, v in s.client.get_registered_model(NAME).tags.items()
        if k.startswith("nash.move.")
    ]
    assert any(
        m["alias"] == "champion-box-b"
        and m["to"] == str(version.version)
        and m["who"]
        and m["when"]
        and "box-b" in m["why"]
        for m in moves
    )


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(store, capsys):
    s = store
    child = candidates(s)[0]
    artifacts = Path(child.info.artifact_uri.removeprefix("file://"))
    cases = [
        (["benchmark", "--sweep", "0" * 32], "no run '" + "0" * 32 + "'"),
        (["benchmark", "--sweep", child.info.run_id], "is not a nash sweep run"),
        (
            ["benchmark", "--sweep", s.sweep, "--hardware-name", "a100 (80GB)"],
            "hardware name 'a100 (80GB)' cannot be used",
        ),
        (["select", "--sweep", s.sweep, "--hardware", "gpu@home"], "hardware name 'gpu@home'"),
        (
            ["select", "--sweep", s.sweep, "--hardware", "never-measured"],
            "no figures for hardware 'never-measured'",
        ),
        (["promote", "99", "--model", NAME], "has no version '99'"),
        (["benchmark", "--sweep", s.sweep, "--hardware-name", "box-c"], "has no usable model"),
    ]
    before = snapshot(s)
    for argv, expected in cases:
        hidden = None
        if "box-c" in argv:  # a missing model artifact: the run's logged model is gone
            hidden = artifacts.with_name("artifacts.hidden")
            artifacts.rename(hidden)
        try:
            code = main([*argv, "--tracking-uri", s.uri])
        finally:
            if hidden:
                hidden.rename(artifacts)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("nash: error: "), err
        assert expected in err, err
    assert snapshot(s) == before


def _post(port: int, records: list[dict]):
    body = json.dumps({"dataframe_records": records}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_challenger_gate_rollback_and_serving(store, capsys):
    s = store
    v1 = alias(s, "champion")
    assert main(["rollback", "--tracking-uri", s.uri]) == 2
    assert "no earlier champion" in capsys.readouterr().err

    # the base model changes; `nash watch` sweeps; loose tolerances so the gate passes
    loose = [
        "selection.min_retention=0.001",
        "selection.min_retention_low=0.001",
        "registry.max_slowdown=20",
    ]
    res = nash(
        [
            "watch",
            "configs/smoke.yaml",
            "--workdir",
            s.work,
            *with_overrides(QUALITY + CHANGED + loose),
        ],
        s.env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "changed: " in res.stdout and "promotion: promoted (promotion gate passed" in res.stdout
    second = _sweeps(s.client, s.exp)[-1]
    v2 = second.data.tags["nash.promotion.challenger_version"]
    assert v2 != v1
    assert alias(s, "champion") == v2
    assert second.data.tags["nash.promotion.decision"] == "promoted"
    assert second.data.metrics["gate/champion_rougeL"] > 0  # the champion was evaluated again
    assert "gate/challenger_latency_p50_ms_bs1" in second.data.metrics

    # a challenger made worse on purpose (its teacher barely trained): the gate keeps v2
    res = nash(
        [
            "run",
            "configs/smoke.yaml",
            "--workdir",
            s.work,
            *with_overrides(QUALITY + CHANGED + ["teacher.train.max_steps=2"]),
        ],
        s.env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "promotion: kept champion (promotion gate failed: quality:" in res.stdout, res.stdout
    third = _sweeps(s.client, s.exp)[-1]
    v3 = third.data.tags["nash.promotion.challenger_version"]
    assert alias(s, "champion") == v2
    assert alias(s, "challenger") == v3
    assert third.data.tags["nash.gate.passed"] == "False"
    assert "rougeL_retention" in third.data.tags["nash.promotion.reason"]
    gate_txt = Path(s.client.download_artifacts(third.info.run_id, "gate/gate.txt", str(s.tmp)))
    assert "promotion gate: FAILED" in gate_txt.read_text()

    # rollback: back to v1, the move recorded
    res = nash(["rollback", "--workdir", s.work, "--reason", "quality complaints"], s.env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert alias(s, "champion") == v1
    moves = [
        json.loads(v)
        for k, v in sorted(s.client.get_registered_model(NAME).tags.items())
        if k.startswith("nash.move.")
    ]
    last = moves[-1]
    assert (last["alias"], last["from"], last["to"], last["kind"], last["why"]) == (
        "champion",
        v2,
        v1,
        "rollback",
        "quality complaints",
    )
    assert last["who"] and last["when"]

    # serving what rollback restored, as documented: `nash serve`, no venv on PATH
    mlflow.set_tracking_uri(s.uri)
    texts = ["anna: can we meet at noon? ben: yes, at the cafe."]
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/{v1}").predict(
        pd.DataFrame({"source": texts})
    )
    port = free_port()
    path = os.pathsep.join(
        p for p in s.env.get("PATH", "").split(os.pathsep) if Path(p).resolve() != BIN.resolve()
    )
    argv = [BIN / "nash", "serve", "--workdir", s.work, "--port", port]
    with model_server(argv, port, {**s.env, "PATH": path}, cwd=REPO):
        answer = _post(port, [{"source": texts[0]}])["predictions"]
        assert answer == expected.to_dict(orient="records")
        with pytest.raises(urllib.error.HTTPError) as bad:  # the signature names the column
            _post(port, [{"text": texts[0]}])
        assert bad.value.code == 400 and "source" in bad.value.read().decode()
