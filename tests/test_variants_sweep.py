"""A smoke sweep with every option of issue 16: a magnitude arm, magnitude on top of NASH
(``from_arm``) and ``benchmark.variants: [int8, bf16]``. Real models, a real Prefect flow run,
a real MLflow store: every variant is evaluated, benchmarked and logged with its method suffix,
the magnitude candidates with their zero fraction and non-zero parameter count."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from sweep_tiny import REPO, TINY, clean_env, nash, with_overrides

pytestmark = pytest.mark.slow

ARMS = (
    "pruning.arms=[{method: nash, decoder_layers: 1, targets: [0.3]},"
    " {method: magnitude, targets: [0.5], magnitude: {scope: global, schedule: cubic}},"
    " {method: magnitude, from_arm: nash-k1, targets: [0.4],"
    " magnitude: {scope: per_layer, schedule: one_shot, stacks: [encoder]}}]"
)


def test_sweep_with_magnitude_arms_and_precision_variants(tmp_path):
    work = tmp_path / "work"
    overrides = [o for o in TINY if not o.startswith("pruning.arms")] + [
        ARMS,
        "benchmark.variants=[int8, bf16]",
    ]
    res = nash(
        ["run", "configs/smoke.yaml", "--workdir", work, *with_overrides(overrides)],
        clean_env(tmp_path),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    uri = f"sqlite:///{work.resolve()}/mlflow.db"
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`nash.kind` = 'candidate'"
    )
    by_label = {r.data.tags["nash.label"]: r for r in runs}
    trained = ["teacher", "nash-k1@0.3", "magnitude@0.5", "nash-k1+magnitude@0.4"]
    assert set(by_label) == {f"{t}{s}" for t in trained for s in ("", "-int8", "-bf16")}
    for label in trained:
        base = by_label[label]
        for variant, quant in (("int8", "int8-dynamic"), ("bf16", "bf16")):
            run = by_label[f"{label}-{variant}"]
            assert run.info.status == "FINISHED"
            assert run.data.tags["nash.method"] == f"{base.data.tags['nash.method']}-{variant}"
            assert run.data.params["quantization"] == quant
            for m in ("rougeL", "rougeL_retention", "speedup", "latency_p50_ms", "params_total"):
                assert m in run.data.metrics, (label, variant, m)
        assert base.data.params["quantization"] == "none"
        # the bf16 variant holds its weights in half the bytes of the fp32 model
        assert by_label[f"{label}-bf16"].data.metrics["weights_mb"] == pytest.approx(
            base.data.metrics["weights_mb"] / 2, rel=0.05
        )

    mag = by_label["magnitude@0.5"].data.metrics
    assert mag["weight_zero_fraction"] == pytest.approx(0.5, abs=0.005)
    assert mag["params_nonzero"] < mag["params_total"]
    assert by_label["teacher"].data.metrics["weight_zero_fraction"] < 0.01
    on_nash = by_label["nash-k1+magnitude@0.4"].data.metrics
    nash_only = by_label["nash-k1@0.3"].data.metrics
    # encoder only, per layer: 0.4 of the encoder's linear weights, the decoder dense
    assert 0.0 < on_nash["weight_zero_fraction"] < 0.4
    assert on_nash["encoder_sparsity"] == pytest.approx(nash_only["encoder_sparsity"])
    assert on_nash["params_total"] == nash_only["params_total"]
    assert on_nash["params_nonzero"] < nash_only["params_nonzero"]
    assert by_label["nash-k1+magnitude@0.4"].data.params["decoder_layers"] == "1"

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{by_label['magnitude@0.5-bf16'].info.run_id}/model")
    inner = served.unwrap_python_model().model
    assert next(inner.parameters()).dtype == torch.bfloat16
    out = served.predict(pd.DataFrame({"source": ["Anna: Dinner on monday at 7 pm?\nBen: Sure."]}))
    assert len(out) == 1 and isinstance(out["summary"][0], str)

    # docs/structure-precision.md's table is made from such a store by this script
    table = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compare_table.py"), "--workdir", str(work)]
        + ["--config-name", "smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert table.returncode == 0, table.stderr[-2000:]
    rows = [line for line in table.stdout.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[2:]  # rows[1] is the separator
    assert "speedup, batch 1, fixed length" in header and "on disk, zlib" in header
    assert {r.split(" | ")[0].lstrip("| ") for r in body} == set(by_label)
    ncols = header.count(" | ")
    assert all(r.count(" | ") == ncols for r in body)
    mag_row = next(r for r in body if r.startswith("| magnitude@0.5 |"))
    assert "| fp32 |" in mag_row and "| 0.500 |" in mag_row and " MB |" in mag_row
    assert "(source)" in next(r for r in body if r.startswith("| magnitude@0.5-bf16 |"))
    assert '"cpu_model"' in table.stdout  # the hardware fingerprint under the table


def test_sweep_with_ctranslate2_variants_serves_a_ct2_champion(tmp_path):
    """``benchmark.variants: [ct2-int8]``: the teacher and the student converted to
    CTranslate2, evaluated by generating through it (paired bootstrap against the teacher),
    benchmarked in the same rounds as the PyTorch models, logged with their size and measured
    thread setting; the champion (the fastest that qualifies) is a CTranslate2 model and the
    registered pyfunc generates through CTranslate2."""
    work = tmp_path / "work"
    overrides = TINY + [
        "benchmark.variants=[ct2-int8]",
        "selection.min_retention=0.01",
        "selection.min_retention_low=0.01",
    ]
    res = nash(
        ["run", "configs/smoke.yaml", "--workdir", work, *with_overrides(overrides)],
        clean_env(tmp_path),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    uri = f"sqlite:///{work.resolve()}/mlflow.db"
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, "tags.`nash.kind` = 'candidate'")
    by_label = {r.data.tags["nash.label"]: r for r in runs}
    assert set(by_label) == {"teacher", "sft-k1", "teacher-ct2-int8", "sft-k1-ct2-int8"}
    for label in ("teacher", "sft-k1"):
        run = by_label[f"{label}-ct2-int8"]
        assert run.info.status == "FINISHED"
        assert run.data.params["quantization"] == "ct2-int8"
        assert run.data.params["serving_intra_threads"] in ("1", "2", str(os.cpu_count()))
        for m in ("rougeL", "rougeL_delta_ci_low", "speedup", "latency_p50_ms", "disk_mb"):
            assert m in run.data.metrics, (label, m)
        # int8 weights: about a quarter of the fp32 model's bytes (embeddings included)
        assert run.data.metrics["weights_mb"] < 0.5 * by_label[label].data.metrics["weights_mb"]

    sweep = client.search_runs(exps, "tags.`nash.kind` = 'sweep'")[0]
    champion = sweep.data.tags["nash.champion"]
    assert champion.endswith("-ct2-int8"), champion

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{by_label[champion].info.run_id}/model")
    inner = served.unwrap_python_model().model
    assert type(inner).__name__ == "CT2Model"
    out = served.predict(pd.DataFrame({"source": ["Anna: Dinner on monday at 7 pm?\nBen: Sure."]}))
    assert len(out) == 1 and isinstance(out["summary"][0], str)

    # `nash benchmark --sweep` (as on another machine) re-times the converted models too
    res = nash(
        ["benchmark", "--sweep", sweep.info.run_id, "--workdir", work, "--hardware-name", "box-c"],
        clean_env(tmp_path),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for r in client.search_runs(exps, "tags.`nash.kind` = 'candidate'"):
        assert r.data.metrics["hw/box-c/latency_p50_ms_bs1"] > 0, r.data.tags["nash.label"]
