"""``benchmark.quantize_int8``: int8 variants of the teacher and every candidate go through the
same evaluation, benchmark, MLflow logging and selection as the others, and their logged pyfunc
serves the quantised model (re-quantised at load, nothing pickled)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sweep_tiny import TINY, clean_env, nash, with_overrides

pytestmark = pytest.mark.slow


def test_int8_variants_are_candidates_like_the_others(tmp_path):
    work = tmp_path / "work"
    res = nash(
        [
            "run",
            "configs/smoke.yaml",
            "--workdir",
            work,
            *with_overrides(TINY + ["benchmark.quantize_int8=true"]),
        ],
        clean_env(tmp_path),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    uri = f"sqlite:///{work.resolve()}/mlflow.db"
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`nash.kind` = 'candidate'"
    )
    by_label = {r.data.tags["nash.label"]: r for r in runs}
    assert set(by_label) == {"teacher", "sft-k1", "teacher-int8", "sft-k1-int8"}
    assert by_label["sft-k1-int8"].data.tags["nash.method"] == "sft-int8"
    assert by_label["teacher-int8"].data.tags["nash.method"] == "teacher-int8"
    for label in ("teacher-int8", "sft-k1-int8"):
        run = by_label[label]
        assert run.data.params["quantization"] == "int8-dynamic"
        assert run.info.status == "FINISHED"
        for m in (
            "rougeL",
            "rougeL_retention",
            "rougeL_delta_ci_low",
            "speedup",
            "latency_p50_ms",
            "params_total",
        ):
            assert m in run.data.metrics, (label, m)
    assert by_label["sft-k1"].data.params["quantization"] == "none"
    # the same source weights: int8 keeps the parameter count, the decoder depth
    assert (
        by_label["sft-k1-int8"].data.params["decoder_layers"]
        == by_label["sft-k1"].data.params["decoder_layers"]
        == "1"
    )

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{by_label['sft-k1-int8'].info.run_id}/model")
    inner = served.unwrap_python_model().model
    kinds = {f"{type(m).__module__}.{type(m).__name__}" for m in inner.modules()}
    assert "torch.nn.modules.linear.Linear" not in kinds, kinds  # every Linear is int8 now
    assert any("quantized" in k and k.endswith(".Linear") for k in kinds), kinds
    out = served.predict(pd.DataFrame({"source": ["Anna: Dinner on monday at 7 pm?\nBen: Sure."]}))
    assert len(out) == 1 and isinstance(out["summary"][0], str)
