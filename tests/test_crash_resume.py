"""Crashes and restarts of a real sweep (`nash run` subprocesses, a Prefect server, a SQLite
MLflow store, real training), compared with an uninterrupted sweep in another workdir.

One workdir lives through three attempts of the same command:
1. SIGTERM while the first pruning stage trains: the stage checkpoints at its next step, the
   runs are closed FAILED, exit code 130, nothing keeps running;
2. the same command resumes that stage from the checkpoint; SIGKILL (the whole process group:
   OOM killer, power cut) in the middle of the second stage -- its runs are left RUNNING;
3. the same command: the dead sweep's runs are marked FAILED, nothing finished is recomputed,
   the second stage resumes from its last checkpoint, and the candidates, weights, masks and
   non-timing metrics are exactly those of the uninterrupted sweep.
Then a diverging stage (NaN/inf loss) on a copy of the reference workdir, and fast checks of
the parts: curve replay without duplicates, the liveness lock, which failures are retried.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_tiny import (
    all_runs,
    assert_same_results,
    candidates,
    done_markers,
    env,
    finish,
    reference,
    stage_checkpoints,
    start,
    sweep,
    wait_for,
)
from safetensors.torch import load_file


def _group_gone(pgid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_terminated_then_killed_sweep_resumes_to_the_same_result(tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory)
    work, environ = tmp_path / "work", env(tmp_path)
    t0 = time.monotonic()

    # ---- 1. SIGTERM in the middle of the first stage
    proc = start(work, environ)
    first_stage = next(iter(wait_for(lambda: stage_checkpoints(work), proc)))
    proc.send_signal(signal.SIGTERM)
    rc, log = finish(proc)
    assert rc == 130, log[-4000:]
    assert "interrupted; finished steps are checkpointed" in log
    assert _group_gone(proc.pid), "a child process (a worker, a launcher) outlived nash"
    term_step = stage_checkpoints(work)[first_stage]
    assert 5 <= term_step < 30  # a step boundary, stage unfinished
    assert {r.info.status for r in all_runs(work)} == {"FAILED"}

    # ---- 2. resume; SIGKILL the process group while the second stage trains
    proc = start(work, environ)
    ckpts = wait_for(
        lambda: {k: v for k, v in stage_checkpoints(work).items() if k != first_stage}, proc
    )
    os.killpg(proc.pid, signal.SIGKILL)
    rc, _ = finish(proc)
    assert rc == -signal.SIGKILL
    second_stage = next(iter(ckpts))
    kill_step = stage_checkpoints(work)[second_stage]  # the last checkpoint written
    assert 5 <= kill_step < 30
    finished = done_markers(work)
    assert json.loads(finished[first_stage])["resumed_from"] == {
        ".stage.work/checkpoint": term_step
    }
    assert second_stage not in finished
    killed = [r for r in all_runs(work) if r.info.status == "RUNNING"]
    assert len(killed) == 4  # sweep + 3 candidates, left open

    # ---- 3. the same command again
    proc = start(work, environ)
    rc, log = finish(proc)
    assert rc == 0, log[-5000:]
    markers = done_markers(work)
    assert all(markers[k] == v for k, v in finished.items()), "a finished step was recomputed"
    assert json.loads(markers[second_stage])["resumed_from"] == {
        ".stage.work/checkpoint": kill_step
    }

    runs = all_runs(work)
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run may stay RUNNING"
    for run in killed:
        after = next(r for r in runs if r.info.run_id == run.info.run_id)
        assert after.info.status == "FAILED" and "died" in after.data.tags["nash.abandoned"]
    assert len(candidates(work)) == 3
    print(f"\ncrash/resume (3 attempts): {time.monotonic() - t0:.0f} s")
    assert_same_results(work, ref)


@pytest.mark.slow
def test_diverging_stage_fails_its_run_and_keeps_the_last_good_checkpoint(
    tmp_path, tmp_path_factory
):
    work = tmp_path / "work"
    shutil.copytree(
        reference(tmp_path_factory),
        work,  # teacher and data are cached
        ignore=shutil.ignore_patterns("prefect", ".alive"),
    )
    rc, log, seconds = sweep(
        work,
        env(tmp_path),
        "pruning.stage.train.lr=1.0e+30",
        "pruning.stage.train.max_bad_steps=2",
        "pruning.stage.train.checkpoint_every=1",
    )
    print(f"\ndiverging stage: {seconds:.0f} s")
    assert rc == 2, log[-4000:]
    error = next(line for line in log.splitlines() if line.startswith("nash: error:"))
    assert "loss was NaN/inf for 2 consecutive steps (up to step 3; max_bad_steps=2)" in error
    assert "the last good checkpoint is" in error and "Lower the learning rate" in error
    ((stage, step),) = stage_checkpoints(work).items()  # after step 2: skipped, weights of step 1
    state = json.loads((work / "runs" / stage / ".stage.work/checkpoint/state.json").read_text())
    assert step == 2 and state["bad_steps"] == 1 and not state["done"]
    weights = load_file(work / "runs" / stage / ".stage.work/checkpoint/model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())

    failed = [r for r in all_runs(work) if r.info.status != "FINISHED"]
    assert {r.info.status for r in failed} == {"FAILED"}
    assert {r.data.tags.get("nash.label") for r in failed} == {
        None,
        "teacher",
        "nash-k1@0.2",
        "nash-k1@0.3",
    }


# --------------------------------------------------------------------------- the parts
def test_resumed_curve_is_replayed_once_without_duplicates(tmp_path):
    from nash_mlflow import tracking

    client = tracking.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.ensure_experiment(client, "curves", f"sqlite:///{tmp_path / 'mlflow.db'}")
    first, second = (tracking.create_run(client, exp, n, {}) for n in ("killed", "resumed"))
    path = tmp_path / "stage.jsonl"
    log = tracking.CurveLogger(client, first, "stage", path)
    for step in (5, 10, 15):  # checkpoint at 10, killed after 15
        log(step, {"train_loss": 1.0 / step, "tokens_per_s": 99.0})
    log(10, {"eval_score": -0.5})
    with path.open("a") as f:
        f.write('{"step": 20, "train_lo')  # the write a SIGKILL cut short

    log = tracking.CurveLogger(client, second, "stage", path)  # the resumed attempt
    for step in (15, 20):  # 15 again (same numbers), then new
        log(step, {"train_loss": 1.0 / step, "tokens_per_s": 12.0})
    history = client.get_metric_history(second, "stage/train_loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / s) for s in (5, 10, 15, 20)]
    assert [m.step for m in client.get_metric_history(second, "stage/eval_score")] == [10]
    assert [r["step"] for r in tracking.read_curve(path)] == [5, 10, 15, 10, 20]


def test_liveness_lock_tells_a_dead_sweep_from_a_live_one(tmp_path):
    from nash_mlflow import liveness

    holder = (
        "import sys, time; from pathlib import Path; from nash_mlflow import liveness; "
        "liveness.hold(Path(sys.argv[1]), 'r'); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path / "sweep")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.stdout.readline().strip() == "held"
    assert liveness.is_alive(tmp_path / "sweep")
    proc.kill()  # however it dies, the kernel unlocks
    proc.wait()
    assert not liveness.is_alive(tmp_path / "sweep")
    liveness.hold(tmp_path / "sweep", "mine")  # and this process may take it over
    assert liveness.is_alive(tmp_path / "sweep")
    liveness.release("mine")
    assert not liveness.is_alive(tmp_path / "sweep")
    assert liveness.is_alive(tmp_path / "never-locked")  # no lock file: not ours to judge


def test_only_transient_failures_are_retried():
    from mlflow.exceptions import MlflowException

    from nash_core.config import ConfigError
    from nash_core.errors import DataError, TrackingError, TrainingError
    from tasks.retry import RETRIES, is_transient

    assert all(
        is_transient(e)
        for e in (
            ConnectionError("reset"),
            TimeoutError(),
            MlflowException("503"),
            TrackingError("down"),
            OSError("NFS hiccup"),
        )
    )
    assert not any(
        is_transient(e)
        for e in (
            DataError("row 3"),
            TrainingError("NaN"),
            ConfigError("x", ["y"]),
            ValueError("bug"),
        )
    )
    assert RETRIES["retries"] >= 2 and RETRIES["retry_delay_seconds"] == sorted(
        RETRIES["retry_delay_seconds"]
    )  # growing delays: backoff
