"""The benchmark scripts still run end to end (tiny sizes; the numbers themselves are not
judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_prune_step_overhead_reports_every_variant_interleaved():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "prune_step_overhead.py"),
            "--batch",
            "2",
            "--src",
            "8",
            "--tgt",
            "4",
            "--vocab",
            "64",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert set(results) == {"plain", "masked", "masked+kd"}
    for r in results.values():
        assert r["min_ms"] > 0 and r["median_ms"] >= r["min_ms"] and r["peak_mb"] > 50
    assert results["plain"]["paired_ratio"] == 1.0
    assert report["mask_overhead"] == pytest.approx(
        results["masked"]["median_ms"] / results["plain"]["median_ms"] - 1
    )
    assert report["mask_overhead_paired"] == pytest.approx(results["masked"]["paired_ratio"] - 1)
    assert "mask overhead" in out.stdout and "goal <= +15%" in out.stdout
