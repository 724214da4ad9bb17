"""The smoke sweep for real: Prefect's temporary server, a SQLite MLflow store, real training.

Each sweep runs in a fresh Python process (as `nash run` would), with PREFECT_HOME and the
workdir in tmp_path, so the temporary Prefect server and its database belong to this test.
Three sweeps on one workdir:
1. from scratch: the store must hold the whole layout (sweep run, teacher + candidates with
   every metric, curves, artifacts, Pareto plot, registered champion);
2. unchanged: nothing is recomputed (every step comes from the result cache);
3. only the last stage target of one arm changed: only that stage and what depends on it run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

DRIVER = (
    "import json, sys; from nash_cli.sweep import run_sweep; print('RESULT ' + "
    "json.dumps(run_sweep('configs/smoke.yaml', sys.argv[2:], sys.argv[1])))"
)
REPO = Path(__file__).resolve().parent.parent
METRICS = (
    "rougeL",
    "rouge1",
    "rouge2",
    "rougeLsum",
    "rougeL_retention",
    "rougeL_delta_ci_low",
    "rougeL_delta_ci_high",
    "latency_p50_ms",
    "latency_p90_ms",
    "speedup",
    "tokens_per_s",
    "peak_mem_mb",
    "params_total",
    "encoder_sparsity",
    "cost_per_1k_requests",
)


def sweep(workdir: Path, *overrides: str) -> tuple[dict, float]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID"))
    }
    env.update(
        PREFECT_HOME=str(workdir / "prefect"),
        NASH_NO_PROGRESS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(workdir), *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), seconds


def children(client: MlflowClient, result: dict) -> dict:
    runs = client.search_runs(
        [result["experiment_id"]], f"tags.mlflow.parentRunId = '{result['sweep_run_id']}'"
    )
    return {r.data.tags["nash.label"]: r for r in runs}


def kinds(keys: list[str]) -> list[str]:
    return sorted(k.rsplit("-", 1)[0] for k in keys)


def test_smoke_sweep_layout_cache_and_partial_recompute(tmp_path):
    workdir = tmp_path / "work"
    first, t_first = sweep(workdir)
    client = MlflowClient(first["tracking_uri"])
    assert first["tracking_uri"] == f"sqlite:///{workdir.resolve()}/mlflow.db"

    # --- the parent run
    parent = client.get_run(first["sweep_run_id"])
    tags = parent.data.tags
    assert tags["nash.kind"] == "sweep" and tags["nash.config_name"] == "smoke"
    assert tags["prefect.flow_run_id"] and tags["prefect.flow_run_name"]
    assert tags["nash.base_model"] == "demo" and len(tags["nash.base_fingerprint"]) >= 8
    assert len(tags["nash.data_fingerprint"]) >= 8
    assert parent.data.params["pruning.stage.mask_lr"] == "0.1" and parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "config.yaml",
        "decision.txt",
        "pareto.png",
        "tradeoff.csv",
        "tradeoff.md",
    }
    assert tags["nash.champion"] == first["champion"] and tags["nash.decision_reason"]

    # --- one child per candidate, teacher included, with every metric
    runs = children(client, first)
    assert set(runs) == {
        "teacher",
        "nash-k2@0.2",
        "nash-k2@0.3",
        "nash-k1@0.3",
        "sft-k2",
        "cofi@0.3",
    }
    assert {r.data.tags["nash.method"] for r in runs.values()} == {"teacher", "nash", "sft", "cofi"}
    for label, run in runs.items():
        missing = [m for m in METRICS if m not in run.data.metrics]
        assert not missing, f"{label} lacks {missing}"
        assert run.info.status == "FINISHED" and run.data.tags["nash.kind"] == "candidate"
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model", "benchmark.json", "predictions_sample.csv"} <= arts, (label, arts)
    assert runs["teacher"].data.metrics["speedup"] == pytest.approx(1.0)
    assert runs["nash-k1@0.3"].data.params["decoder_layers"] == "1"
    assert runs["nash-k2@0.3"].data.params["target_sparsity"] == "0.3"
    assert runs["nash-k2@0.3"].data.metrics["encoder_sparsity"] > 0
    assert "mask.png" in {a.path for a in client.list_artifacts(runs["nash-k2@0.3"].info.run_id)}
    # NASH vs SFT at the same depth: the paired interval on both k=2 NASH candidates, not k=1
    for label in ("nash-k2@0.2", "nash-k2@0.3"):
        m = runs[label].data.metrics
        assert m["rougeL_vs_sft_ci_low"] <= m["rougeL_vs_sft_delta"] <= m["rougeL_vs_sft_ci_high"]
        assert m["rougeL_vs_sft_delta"] == pytest.approx(
            m["rougeL"] - runs["sft-k2"].data.metrics["rougeL"], abs=1e-9
        )
        assert runs[label].data.tags["nash.vs_sft"] == "sft-k2"
    assert "rougeL_vs_sft_delta" not in runs["nash-k1@0.3"].data.metrics
    assert len(client.get_metric_history(runs["nash-k2@0.3"].info.run_id, "stage/train_loss")) >= 2
    assert len(client.get_metric_history(runs["teacher"].info.run_id, "train/train_loss")) >= 2

    # --- the champion is registered under the alias
    version = client.get_model_version_by_alias("nash-smoke", "champion")
    assert version.run_id == first["champion_run_id"] == runs[first["champion"]].info.run_id
    assert version.tags["nash.base_fingerprint"] == tags["nash.base_fingerprint"]

    # --- 2. unchanged: everything from the cache, nothing retrained
    result_dirs = set((workdir / "runs").iterdir())
    second, t_second = sweep(workdir)
    # preflight may already have prepared data/base before the first flow: compare with all of it
    assert second["computed"] == []
    assert second["reused"] == sorted(set(first["computed"]) | set(first["reused"]))
    assert set((workdir / "runs").iterdir()) == result_dirs
    rerun = children(client, second)
    assert all(r.data.tags.get("nash.cached.stage", "True") == "True" for r in rerun.values())
    assert rerun["teacher"].data.tags["nash.cached.train"] == "True"
    # cached curves are replayed into the new runs
    assert len(client.get_metric_history(rerun["nash-k2@0.3"].info.run_id, "stage/train_loss")) >= 2
    print(
        f"\nsmoke sweep: first {t_first:.0f} s, cached re-run {t_second:.0f} s "
        f"(ratio {t_second / t_first:.2f})"
    )

    # --- 3. only the last target of the first arm changes
    third, _ = sweep(workdir, "pruning.arms.0.targets=[0.2,0.35]")
    assert kinds(third["computed"]) == ["bench", "eval", "export", "finetune", "stage"]
    assert "nash-k2@0.35" in third["candidates"]
    new_dirs = {p.name for p in set((workdir / "runs").iterdir()) - result_dirs}
    assert new_dirs == set(third["computed"])
