"""Sweeps whose process died: their MLflow runs end FAILED instead of RUNNING forever.

A sweep killed by SIGKILL (the OOM killer, ``kill -9``, a power cut) never closes its runs.
While a sweep runs, its process holds an exclusive ``flock`` on ``<workdir>/sweeps/<run id>/
.alive``; the kernel drops that lock when the process dies, however it dies. The next sweep on
the same workdir and host marks every RUNNING sweep run whose lock is free -- and that sweep's
RUNNING candidate runs -- FAILED, with a ``nash.abandoned`` tag naming the sweep that took
over. Nothing is lost: finished steps are in the result cache and interrupted training resumes
from its checkpoints, so the new sweep continues where the dead one stopped.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from mlflow.tracking import MlflowClient

from nash_mlflow import tracking

ALIVE = ".alive"
WORKDIR_TAG, HOST_TAG, ABANDONED_TAG = "nash.workdir", "nash.host", "nash.abandoned"
_held: dict[str, IO] = {}


def identity(workdir: str | Path) -> dict[str, str]:
    """Tags that say where a sweep runs (which workdir's lock files speak for it)."""
    return {WORKDIR_TAG: str(Path(workdir).resolve()), HOST_TAG: socket.gethostname()}


def hold(sweep_dir: Path, run_id: str) -> None:
    """Lock ``sweep_dir/.alive`` for as long as this process runs the sweep ``run_id``.

    The file is locked under a temporary name and then renamed, so no other process ever sees
    it unlocked while this sweep is alive.
    """
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / f"{ALIVE}.{os.getpid()}"
    handle = open(tmp, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    os.replace(tmp, sweep_dir / ALIVE)
    _held[run_id] = handle


def release(run_id: str) -> None:
    handle = _held.pop(run_id, None)
    if handle is not None:
        handle.close()


def is_alive(sweep_dir: Path) -> bool:
    """Whether some process holds ``sweep_dir/.alive`` (no file: unknown, counted as alive)."""
    path = sweep_dir / ALIVE
    if not path.is_file():
        return True
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def fail_abandoned(client: MlflowClient, workdir: str | Path, successor: str) -> list[str]:
    """Mark the dead sweeps of this workdir (and their open candidates) FAILED; their run ids."""
    mine = identity(workdir)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    sweeps = client.search_runs(
        experiments, f"attributes.status = 'RUNNING' and tags.`{tracking.KIND}` = 'sweep'"
    )
    failed = []
    for sweep in sweeps:
        tags, run_id = sweep.data.tags, sweep.info.run_id
        if run_id == successor or any(tags.get(k) != v for k, v in mine.items()):
            continue
        if is_alive(Path(mine[WORKDIR_TAG]) / "sweeps" / run_id):
            continue
        children = client.search_runs(
            [sweep.info.experiment_id],
            f"tags.`{tracking.PARENT_TAG}` = '{run_id}' and attributes.status = 'RUNNING'",
        )
        note = (
            f"the process running this sweep died without closing it (killed or crashed); "
            f"sweep run {successor} continues from its cached steps and checkpoints"
        )
        for run in [*children, sweep]:
            tracking.set_tags(client, run.info.run_id, {ABANDONED_TAG: note})
            tracking.finish_run(client, run.info.run_id, ok=False)
        failed.append(run_id)
    return failed
