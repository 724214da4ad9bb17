"""The MLflow layout helpers and the result cache, against a real SQLite store in tmp_path."""

import json

import pytest

from nash_core.config import load_config
from nash_mlflow import tracking
from tasks.cache import cache_key, run_cached


@pytest.fixture
def cfg():
    return load_config("configs/smoke.yaml")


def test_tracking_uri_precedence(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = tracking.resolve_tracking_uri(cfg, tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.artifact_location(default) == (tmp_path.resolve() / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri(cfg, tmp_path) == "http://127.0.0.1:5999"
    assert tracking.artifact_location("http://127.0.0.1:5999") is None
    cfg.experiment.tracking_uri = "sqlite:////x/y.db"
    assert tracking.resolve_tracking_uri(cfg, tmp_path) == "sqlite:////x/y.db"


def test_flatten_nested_config():
    flat = tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}


def test_parent_child_metrics_curves_and_artifacts(cfg, tmp_path):
    uri = tracking.resolve_tracking_uri(cfg, tmp_path)
    client = tracking.make_client(uri)
    exp = tracking.ensure_experiment(client, cfg.experiment_name(), uri)
    assert tracking.ensure_experiment(client, cfg.experiment_name(), uri) == exp
    assert client.get_experiment(exp).artifact_location.endswith("/mlartifacts")

    parent = tracking.create_run(
        client,
        exp,
        "sweep",
        {tracking.KIND: "sweep", "x": None},
        params=tracking.flatten(cfg.model_dump(mode="json")),
    )
    child = tracking.create_run(
        client,
        exp,
        "teacher",
        {tracking.KIND: "candidate"},
        params={"stage": 0},
        parent_run_id=parent,
    )
    run = client.get_run(child)
    assert run.data.tags[tracking.PARENT_TAG] == parent and "x" not in run.data.tags
    assert client.get_run(parent).data.params["pruning.stage.mask_lr"] == "0.1"

    tracking.log_metrics(
        client, child, {"rougeL": 0.5, "bad": float("nan"), "name": "x", "flag": True, "n": 3}
    )
    assert client.get_run(child).data.metrics == {"rougeL": 0.5, "n": 3.0}

    curve = tracking.CurveLogger(client, child, "train", tmp_path / "c" / "curve.jsonl")
    for step in (1, 2, 3):
        curve(step, {"loss": 4.0 - step, "lr": 0.1, "note": "skip"})
    hist = client.get_metric_history(child, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert tracking.read_curve(tmp_path / "c" / "curve.jsonl")[0] == {
        "step": 1,
        "loss": 3.0,
        "lr": 0.1,
    }
    other = tracking.create_run(client, exp, "again", {}, parent_run_id=parent)
    assert tracking.replay_curve(client, other, "train", tmp_path / "c" / "curve.jsonl") == 6
    assert len(client.get_metric_history(other, "train/lr")) == 3

    (tmp_path / "a.txt").write_text("hello")
    tracking.log_files(client, child, [tmp_path / "a.txt", tmp_path / "missing.txt"])
    assert [a.path for a in client.list_artifacts(child)] == ["a.txt"]
    tracking.finish_run(client, child, ok=False)
    assert client.get_run(child).info.status == "FAILED"
    assert tracking.run_url(uri, exp, child).startswith("http://127.0.0.1:5000/#/experiments/")


def test_run_cached_computes_once_and_resumes_unfinished(tmp_path):
    calls = []

    def compute(rdir):
        calls.append(rdir)
        (rdir / "out.txt").write_text("result")
        return {"file": "out.txt"}

    code = ("nash_core.io",)
    key = cache_key("step", code, a=1)
    assert key == cache_key("step", code, a=1) != cache_key("step", code, a=2)
    assert key != cache_key("other", code, a=1) != cache_key("step", ("nash_core.data",), a=1)
    first = run_cached(tmp_path, "step", key, compute)
    again = run_cached(tmp_path, "step", key, compute)
    assert (first.cached, again.cached, len(calls)) == (False, True, 1)
    assert again.meta == {"file": "out.txt"} and again.path == first.path

    unfinished = tmp_path / "runs" / f"step-{cache_key('step', code, a=3)}"
    unfinished.mkdir(parents=True)
    (unfinished / "checkpoint").write_text("half")  # a crashed run left this, no marker
    res = run_cached(tmp_path, "step", cache_key("step", code, a=3), compute)
    assert not res.cached and (unfinished / "checkpoint").exists()
    assert json.loads((unfinished / "_done.json").read_text())["meta"] == {"file": "out.txt"}


def test_code_version_follows_imports_and_ignores_docstrings(tmp_path, monkeypatch):
    import nash_core
    from tasks import cache

    pkg = tmp_path / "nash_core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        '"""Doc."""\ndef f():\n    from nash_core.b import g\n    return g()\n'
    )
    (pkg / "b.py").write_text("def g():\n    return 1\n")
    (pkg / "c.py").write_text("X = 1\n")
    monkeypatch.setattr(nash_core, "__file__", str(pkg / "__init__.py"))

    def version():
        cache.code_version.cache_clear()
        return cache.code_version("nash_core.a")

    v0 = version()
    (pkg / "a.py").write_text(
        '"""Other doc."""\n# comment\ndef f():\n    from nash_core.b import g\n\n    return g()\n'
    )
    (pkg / "c.py").write_text("X = 2\n")  # not imported by a
    assert version() == v0
    (pkg / "b.py").write_text("def g():\n    return 2\n")  # lazily imported maths changed
    assert version() != v0
    cache.code_version.cache_clear()
