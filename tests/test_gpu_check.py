"""benchmarks/gpu_check.py --dry-run: the one-call GPU check starts and every part runs on a CPU
at tiny shapes (structural speedups in fp32 and bf16, CTranslate2 conversion when installed, a
rehearsal of one NASH arm with the export reloaded in a fresh process), and it writes its JSON
and Markdown table. No GPU number is checked here: only that the script a GPU machine will run
works, and that a machine without CUDA is told to use --dry-run."""

import json
import subprocess
import sys

import pytest
from sweep_tiny import REPO, clean_env

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(args, tmp_path, timeout=2700):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        env=clean_env(tmp_path, CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_without_a_gpu_it_asks_for_the_dry_run(tmp_path):
    res = _run(["--out", str(tmp_path / "out")], tmp_path, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "no CUDA device" in res.stderr and "--dry-run" in res.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_json_and_markdown(tmp_path):
    out = tmp_path / "out"
    res = _run(["--dry-run", "--out", str(out)], tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["dry_run"] is True and result["verdict"] == "passed"
    parts = result["parts"]
    assert set(parts) == {"structural", "ctranslate2", "rehearsal"}

    rows = parts["structural"]["rows"]
    assert {(r["dtype"], r["batch_size"]) for r in rows} == {
        (d, b) for d in ("float32", "bfloat16") for b in (1, 8)
    }
    assert all(r["decoder_layers"] == 3 and r["params"] < r["params_full"] for r in rows)

    ct2 = parts["ctranslate2"]  # ctranslate2 is a dependency: on the CPU it always runs
    assert ct2["status"] == "ok", ct2["status"]
    assert all(d <= 1e-4 for d in ct2["logprob_max_abs_diff"].values())
    assert {(r["model"], r["engine"]) for r in ct2["rows"]} == {
        (m, e) for m in ("teacher", "nash") for e in ("pytorch-float32", "ct2-float32", "ct2-int8")
    }

    reh = parts["rehearsal"]
    assert reh["status"] == "ok"
    assert reh["masked_vs_export"]["same_tokens"] is True
    assert reh["masked_vs_export"]["decoder_layers_kept"] == [0, 1, 3]
    assert {e["class"] for e in reh["exports"]} >= {"NashT5ForConditionalGeneration"}
    kinds = {s["dir"].split("-")[0] for s in reh["steps"]}
    assert {"teacher", "stage", "export", "finetune"} <= kinds

    md = (out / "gpu_check.md").read_text()
    assert "GPU check (dry run, CPU): passed" in md and "| structural | ok |" in md
