"""The sweep against an MLflow tracking server over HTTP (SQLite backend, local artifact root):
the same code path a team with a shared server takes, only the URI changes."""

import pytest
from mlflow.tracking import MlflowClient
from sweep_tiny import TINY, clean_env, free_port, nash, start_mlflow_server, with_overrides


@pytest.mark.slow
def test_sweep_tracks_to_an_mlflow_server(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = clean_env(tmp_path)
    server = start_mlflow_server(
        tmp_path / "server.db", port, tmp_path / "server.log", env, tmp_path / "artifacts"
    )
    try:
        res = nash(
            ["run", "configs/smoke.yaml", "--workdir", tmp_path / "work", *with_overrides(TINY)],
            {**env, "MLFLOW_TRACKING_URI": uri},
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert not (tmp_path / "work" / "mlflow.db").exists(), "must not fall back to SQLite"

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("nash/demo/demo-dialogues")
        runs = client.search_runs([exp.experiment_id])
        kinds = sorted(r.data.tags.get("nash.kind") for r in runs)
        assert kinds.count("sweep") == 1 and kinds.count("candidate") >= 2
        cand = [r for r in runs if r.data.tags.get("nash.kind") == "candidate"]
        assert all("rougeL" in r.data.metrics for r in cand)
        # artifacts went through the server into its artifact root
        assert any((tmp_path / "artifacts").rglob("MLmodel"))
        champion = client.get_model_version_by_alias("nash-smoke", "champion")
        assert champion.version
        sweep = next(r for r in runs if r.data.tags.get("nash.kind") == "sweep")
        assert sweep.data.tags["nash.promotion.decision"] == "promoted"  # the first champion

        # re-benchmark the finished sweep under another hardware name, through the server
        before = {r.info.run_id: dict(r.data.metrics) for r in cand}
        res = nash(
            [
                "benchmark",
                "--sweep",
                sweep.info.run_id,
                "--tracking-uri",
                uri,
                "--hardware-name",
                "srv-b",
            ],
            env,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        for run_id, metrics in before.items():
            now = client.get_run(run_id).data.metrics
            assert {k: now[k] for k in metrics} == metrics, "original figures changed"
            assert now["hw/srv-b/latency_p50_ms_bs1"] > 0
        assert {a.path for a in client.list_artifacts(sweep.info.run_id, "hardware/srv-b")} >= {
            "hardware/srv-b/tradeoff.md",
            "hardware/srv-b/pareto.png",
            "hardware/srv-b/benchmark.json",
        }
        res = nash(
            ["select", "--sweep", sweep.info.run_id, "--hardware", "srv-b", "--tracking-uri", uri],
            env,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert client.get_model_version_by_alias("nash-smoke", "champion-srv-b").version
    finally:
        server.terminate()
        server.wait(timeout=30)
