"""NASH_NO_PROGRESS=1 (CI logs, the workers nash launches) quiets the libraries' bars as well."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOAD = """
import sys
sys.path.insert(0, {tests!r})
from measure_tiny import save_tiny_t5
from nash_core.loading import load_seq2seq
load_seq2seq(save_tiny_t5(__import__("pathlib").Path({out!r})))
print("loaded")
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_no_progress_also_silences_transformers_loading_bars(tmp_path, quiet):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "NASH_NO_PROGRESS",
            "HF_HUB_DISABLE_PROGRESS_BARS",
            "HF_DATASETS_DISABLE_PROGRESS_BARS",
        )
    }
    env["NASH_NO_PROGRESS"] = "1" if quiet else "0"
    code = LOAD.format(tests=str(ROOT / "tests"), out=str(tmp_path / "m"))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr[-2000:]
    assert ("Loading weights" in out.stderr) is not quiet, out.stderr[-500:]


LOG_MODEL = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from measure_tiny import save_tiny_t5
from nash_core.config import load_config
from nash_mlflow import tracking
from nash_mlflow.registry import log_candidate_model, serving_config
tmp = Path({out!r})
cfg = load_config("configs/smoke.yaml")
uri = tracking.resolve_tracking_uri(cfg, tmp)
client = tracking.make_client(uri)
run = tracking.create_run(client, tracking.ensure_experiment(client, "quiet", uri), "c", {{}})
print(log_candidate_model(client, run, save_tiny_t5(tmp / "m"), serving_config(cfg)))
"""


def test_logging_a_candidate_model_prints_no_mlflow_nags_or_bars(tmp_path):
    """Each candidate's pyfunc used to print MLflow's "Add type hints" warning (which a
    warnings filter cannot catch: MLflow puts its own "once" filter first) and, even with
    NASH_NO_PROGRESS=1, an artifact-copy progress bar."""
    env = {**os.environ, "NASH_NO_PROGRESS": "1"}
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
    code = LOG_MODEL.format(tests=str(ROOT / "tests"), out=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0 and "runs:/" in out.stdout, out.stderr[-2000:]
    assert "type hints" not in out.stderr and "Downloading artifacts" not in out.stderr, out.stderr[
        -1500:
    ]
