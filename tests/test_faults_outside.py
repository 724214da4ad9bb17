"""Faults from outside a sweep (issue 27): the disk filling up while a step writes, and the
MLflow tracking server going away and coming back. Real `nash run` subprocesses on the test
session's Prefect server (reliability_tiny), the crash config's two-stage arm (30 steps,
checkpoint every 5), a real tmpfs and a real `mlflow server`."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from reliability_tiny import CRASH, stage_checkpoints, wait_for
from reliability_tiny import env as session_env
from sweep_tiny import BIN, REPO, clean_env, free_port, start_mlflow_server, with_overrides

from tasks.cache import DONE


@pytest.fixture
def small_disk(tmp_path):
    """A 96 MB tmpfs the test mounts (root only), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {(res.stderr or res.stdout).strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk is full; the file (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_disk_full_during_training_fails_in_one_line_then_resumes(small_disk, tmp_path):
    work = small_disk / "work"
    env = {**session_env(tmp_path), "NASH_SKIP_DISK_CHECK": "1"}  # not the pre-run estimate
    extra = [*CRASH, f"experiment.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]

    def start_crash(log: Path) -> subprocess.Popen:
        cmd = [BIN / "nash", "run", "configs/smoke.yaml", "--workdir", work, *with_overrides(extra)]
        with log.open("w") as out:
            proc = subprocess.Popen(
                list(map(str, cmd)), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        proc.log = log
        return proc

    proc = start_crash(tmp_path / "full.log")
    [stage] = wait_for(lambda: stage_checkpoints(work), proc, poll=0.05)
    filler = _fill(small_disk)
    rc = proc.wait(600)
    out = proc.log.read_text()
    assert rc == 2, out[-4000:]
    [line] = {line for line in out.splitlines() if line.startswith("nash: error: disk full")}
    assert "in step stage" in line and "needed about" in line and "MB are free" in line, line
    assert not (work / "runs" / stage / DONE).exists()  # no half-written result committed
    assert not list((work / "runs").rglob(".*.tmp-*")), "a half-written file was left"
    kept = stage_checkpoints(work)[stage]
    assert kept >= 5

    filler.unlink()
    proc = start_crash(tmp_path / "again.log")
    assert proc.wait(600) == 0, proc.log.read_text()[-4000:]
    done = json.loads((work / "runs" / stage / DONE).read_text())
    assert list(done["resumed_from"].values()) == [kept], done["resumed_from"]


def _mlflow_server(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port over ``root``'s SQLite store and artifact root."""
    log = root / f"server-{len(list(root.glob('server-*.log')))}.log"
    return start_mlflow_server(root / "server.db", port, log, clean_env(root), root / "artifacts")


def _kill(proc: subprocess.Popen) -> None:
    """The server and its workers die at once (a crash, a host restart)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


@pytest.mark.slow
def test_tracking_server_restarts_during_a_sweep(tmp_path):
    """A short outage is retried through; a long one fails the sweep in one line; the same
    command after the server is back completes it without duplicate runs."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # MLflow retries each request (here 3 times, 1-2-4 s apart: default 7, about 4 minutes)
    env = {
        **session_env(tmp_path),
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    work = tmp_path / "work"

    def start_crash(log: Path) -> subprocess.Popen:
        cmd = [BIN / "nash", "run", "configs/smoke.yaml", "--workdir", work, *with_overrides(CRASH)]
        with log.open("w") as out:
            proc = subprocess.Popen(
                list(map(str, cmd)), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        proc.log = log
        return proc

    server = _mlflow_server(tmp_path, port)
    proc = start_crash(tmp_path / "first.log")
    try:
        # 1. the server dies while the first stage trains and is back 2 s later: retried through
        first = next(iter(wait_for(lambda: stage_checkpoints(work), proc, poll=0.05)))
        _kill(server)
        time.sleep(2)
        server = _mlflow_server(tmp_path, port)
        # 2. it dies again while the second stage trains and stays away: one line, exit 2
        wait_for(lambda: {k for k in stage_checkpoints(work) if k != first}, proc, poll=0.05)
        _kill(server)
        rc = proc.wait(600)
        out = proc.log.read_text()
        assert rc == 2, out[-4000:]
        [line] = [x for x in out.splitlines() if x.startswith("nash: error:")]
        assert f"tracking store {uri} failed during the sweep" in line, line
        assert "run the same command again" in line
        # 3. back again: the same command completes the sweep
        server = _mlflow_server(tmp_path, port)
        again = start_crash(tmp_path / "again.log")
        assert again.wait(600) == 0, again.log.read_text()[-4000:]
    finally:
        if server.poll() is None:
            _kill(server)
        if proc.poll() is None:
            proc.kill()
    client = MlflowClient(uri)
    server = _mlflow_server(tmp_path, port)
    try:
        exp = client.get_experiment_by_name("nash/demo/demo-dialogues")
        runs = client.search_runs([exp.experiment_id])
    finally:
        _kill(server)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    sweeps = [r for r in runs if r.data.tags.get("nash.kind") == "sweep"]
    assert sorted(r.info.status for r in sweeps) == ["FAILED", "FINISHED"]
    done = next(r for r in sweeps if r.info.status == "FINISHED").info.run_id
    labels = [r.data.tags["nash.label"] for r in runs if r.data.tags.get(PARENT) == done]
    assert sorted(labels) == sorted(set(labels)) == ["nash-k1@0.2", "nash-k1@0.3", "teacher"]


PARENT = "mlflow.parentRunId"
