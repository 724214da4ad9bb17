"""The MLflow layout of a sweep, written through ``MlflowClient`` with explicit run ids.

Why the client and not the fluent API: MLflow's active run is thread-local, and Prefect runs
tasks in worker threads, so ``mlflow.start_run(nested=True)`` inside a task would not attach to
the sweep's parent run. Every function here takes the run id it writes to.

Layout (the contract the UI, selection and tests rely on):
- experiment ``cfg.experiment_name()``; one parent run per sweep (tag ``nash.kind=sweep``)
  holding the resolved config (artifact + flattened params) and the provenance tags;
- one child run per candidate, teacher included (``nash.kind=candidate``, ``nash.method``,
  ``nash.label``), with the quality / speed metrics, training curves as step metrics and the
  candidate's artifacts.
This module imports mlflow but not prefect, so ``nash ui`` and tests can use it alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from nash_core.config import NashConfig  # noqa: E402
from nash_core.errors import TrackingError  # noqa: E402
from nash_core.io import atomic_write_text  # noqa: E402

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
KIND, METHOD, LABEL = "nash.kind", "nash.method", "nash.label"
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


# --------------------------------------------------------------------------- store
def resolve_tracking_uri(cfg: NashConfig, workdir: str | Path) -> str:
    """``experiment.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else SQLite in the workdir."""
    return cfg.experiment.tracking_uri or default_tracking_uri(workdir)


def default_tracking_uri(workdir: str | Path) -> str:
    """Without a config (``nash ui``): ``MLFLOW_TRACKING_URI``, else SQLite in the workdir."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts.

    For a local store (SQLite file or directory) next to it in ``mlartifacts/``: MLflow's own
    default is ``./mlruns`` relative to the *current directory*, which would scatter artifacts.
    A tracking server decides for itself (``None``).
    """
    if tracking_uri.startswith("sqlite:///"):
        root = Path(tracking_uri.removeprefix("sqlite:///")).parent
    elif tracking_uri.startswith("file://"):
        root = Path(tracking_uri.removeprefix("file://"))
    elif "://" not in tracking_uri:
        root = Path(tracking_uri)
    else:
        return None
    return (root.resolve() / "mlartifacts").as_uri()


def make_client(tracking_uri: str) -> MlflowClient:
    """A client for tracking and registry at ``tracking_uri``; a SQLite store is created or
    upgraded by one process at a time (:func:`open_sqlite_store`)."""
    if tracking_uri.startswith("sqlite:///"):
        open_sqlite_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


_opened: set[str] = set()
_opened_lock = threading.Lock()


@contextlib.contextmanager
def store_lock(db: Path):
    """Exclusive lock on ``<db>.lock`` beside a SQLite store, across processes; says so when
    another process holds it (the caller waits)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning(
                "another process is creating or upgrading the MLflow store %s: waiting for it", db
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def open_sqlite_store(tracking_uri: str) -> None:
    """Create or upgrade a SQLite store's tables once per process, one process at a time.

    MLflow creates and migrates the schema when a process first opens the store; two sweeps
    starting together on a new (or an older) store would both migrate, and the second dies in
    Alembic (``table _alembic_tmp_experiments already exists``). Opening the tracking and
    registry stores under :func:`store_lock` serialises that; MLflow keeps the opened stores
    for the process, so later clients only read.
    """
    with _opened_lock:
        if tracking_uri in _opened:
            return
        with store_lock(Path(tracking_uri.removeprefix("sqlite:///"))):
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            client._get_registry_client().store  # noqa: B018 - opening it creates the tables
        _opened.add(tracking_uri)


_exp_lock = threading.Lock()


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created (with our artifact location) if missing."""
    with _exp_lock:
        try:
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    client.restore_experiment(exp.experiment_id)
                return exp.experiment_id
            return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
        except MlflowException as exc:
            raise TrackingError(
                f"cannot use MLflow experiment '{name}' at {tracking_uri}: {exc}. Check "
                "experiment.tracking_uri / MLFLOW_TRACKING_URI (is the server up?)"
            ) from exc


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A browser link to a run; for a local store, the address ``nash ui`` serves."""
    base = tracking_uri if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    from nash_mlflow.views import run_page_url

    return run_page_url(base.rstrip("/"), experiment_id, run_id)


# --------------------------------------------------------------------------- provenance
def git_commit(path: str | Path | None = None) -> str | None:
    """Commit of the code's repository (``+dirty`` when tracked files changed); None if none."""
    where = Path(path or Path(__file__).resolve().parent.parent)
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}`` (lists JSON-encoded) for MLflow params."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        text = json.dumps(obj) if isinstance(obj, (list, tuple)) else str(obj)
        out[prefix.rstrip(".")] = text[:6000]
    return out


# --------------------------------------------------------------------------- runs
def _tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items() if v is not None}


def create_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    tags: dict[str, Any],
    params: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a RUNNING run (a child when ``parent_run_id``) and log its tags and params."""
    tags = _tags(tags)
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    if params:
        log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)) for k, v in params.items() if v is not None]
    for i in range(0, len(items), 90):  # params per batch are limited to 100
        client.log_batch(run_id, params=items[i : i + 90])


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, Any]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in _tags(tags).items()])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
    """Log the finite numeric values of ``metrics`` (others are skipped, not stringified)."""
    now = int(time.time() * 1000)
    items = []
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if v != v or v in (float("inf"), float("-inf")):
            continue
        items.append(Metric(k, float(v), now, step))
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, metrics=items[i : i + _BATCH])


def finish_run(client: MlflowClient, run_id: str, ok: bool = True) -> None:
    client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


# --------------------------------------------------------------------------- curves
class CurveLogger:
    """``callback(step, metrics)`` for the training loop: appends every record to a JSONL file
    (kept with the cached result, so a cache hit can replay it) and logs it live as step
    metrics ``<phase>/<name>``. A tracking hiccup is logged and skipped: it must never stop
    training.

    Resuming after a crash: the records of the interrupted attempt are already in the file, so
    they are replayed into this run (its curve is whole), and records the resumed loop emits
    again -- the steps between its last checkpoint and the crash, identical since resuming is
    exact -- are dropped instead of being logged twice.
    """

    def __init__(
        self, client: MlflowClient | None, run_id: str | None, phase: str, path: str | Path
    ):
        self.client, self.run_id, self.phase = client, run_id, phase
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        earlier = read_curve(self.path)
        if earlier:  # rewrite without a line a crash cut short, so appends start on a new line
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in earlier))
        self._seen = {self._identity(r) for r in earlier}
        if earlier and client is not None and run_id:
            replay_curve(client, run_id, phase, self.path)

    @staticmethod
    def _identity(record: dict) -> tuple:
        return record["step"], tuple(sorted(k for k in record if k != "step"))

    def __call__(self, step: int, metrics: dict) -> None:
        record = {
            "step": int(step),
            **{
                k: v
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            },
        }
        if self._identity(record) in self._seen:
            return
        self._seen.add(self._identity(record))
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.client is not None and self.run_id:
            try:
                log_metrics(self.client, self.run_id, self._named(record), step=int(step))
            except MlflowException as exc:
                log.warning("could not log training metrics to MLflow (step %s): %s", step, exc)

    def _named(self, record: dict) -> dict:
        return {f"{self.phase}/{k}": v for k, v in record.items() if k != "step"}


def read_curve(path: str | Path) -> list[dict]:
    """The records of a curve file; a last line cut short by a crash is skipped."""
    p = Path(path)
    if not p.is_file():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def replay_curve(client: MlflowClient, run_id: str, phase: str, path: str | Path) -> int:
    """Log a saved curve as step metrics (used when the training result came from the cache)."""
    now = int(time.time() * 1000)
    items = [
        Metric(f"{phase}/{k}", float(v), now, int(rec["step"]))
        for rec in read_curve(path)
        for k, v in rec.items()
        if k != "step"
    ]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, metrics=items[i : i + _BATCH])
    return len(items)


def log_files(
    client: MlflowClient, run_id: str, files: Iterable[str | Path], artifact_path: str | None = None
) -> None:
    for f in files:
        if Path(f).is_file():
            client.log_artifact(run_id, str(f), artifact_path)
