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
    env = {k: v for k, v in os.environ.items()
           if k not in ("NASH_NO_PROGRESS", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    env["NASH_NO_PROGRESS"] = "1" if quiet else "0"
    code = LOAD.format(tests=str(ROOT / "tests"), out=str(tmp_path / "m"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr[-2000:]
    assert ("Loading weights" in out.stderr) is not quiet, out.stderr[-500:]
