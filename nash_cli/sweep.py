"""Entry point of a sweep: ``run_sweep(config_path, overrides, workdir) -> summary dict``.

Prepares the environment *before* Prefect and MLflow are imported, because importing them
fixes their homes and telemetry: without ``PREFECT_API_URL`` Prefect starts a temporary local
server whose database lives in ``PREFECT_HOME`` -- put under the workdir unless the user chose
one -- and with ``PREFECT_API_URL`` set the same flow runs on that server unchanged.
The flow itself is in :mod:`flows.sweep_flow`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: Defaults, never overriding the user's: no telemetry (offline machines), and a temporary
#: Prefect server that may take longer than Prefect's 20 s to start on a busy 2-core machine.
ENV_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prepare_environment(workdir: str | Path) -> None:
    """:data:`ENV_DEFAULTS` and ``PREFECT_HOME=<workdir>/prefect`` unless already chosen.

    Has no effect on an already-imported prefect (its settings were read at import).
    """
    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        home = (Path(workdir) / "prefect").resolve()
        home.mkdir(parents=True, exist_ok=True)  # prefect creates only the last level
        os.environ["PREFECT_HOME"] = str(home)


def prepare_temporary_prefect_db() -> None:
    """Create or upgrade the temporary Prefect server's database, one process at a time.

    Without ``PREFECT_API_URL`` every sweep starts its own temporary server on the database in
    ``PREFECT_HOME`` (the workdir's, by default), and each server migrates it when it starts:
    two sweeps starting together on a new workdir broke one of them (``table artifact has no
    column named task_run_state_id``). Migrating here under a file lock beside the database
    leaves the servers nothing to migrate. A sweep that waits says so. Done once per
    ``PREFECT_HOME`` and Prefect version (a marker file records it): importing Prefect's
    server costs seconds.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    import asyncio
    import fcntl
    import logging

    import prefect
    from prefect.settings import PREFECT_HOME

    home = Path(PREFECT_HOME.value())
    ready = home / f".nash-db-ready-{prefect.__version__}"
    if ready.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".nash-db.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger(__name__).warning(
                "another sweep is preparing the Prefect database in %s: waiting for it", home
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            from prefect.server.database import provide_database_interface

            asyncio.run(provide_database_interface().create_db())
            ready.touch()


def run_sweep(config_path: str, overrides: list[str], workdir: str, cfg=None) -> dict:
    """Validate the config, run the sweep flow with the configured task runner, return a summary.

    ``cfg``: the config already loaded from ``config_path`` and ``overrides`` (``nash run``
    loads it once and hands it down to the flow); None loads it here.
    The summary holds the MLflow ids (``sweep_run_id``, ``experiment_id``, ``tracking_uri``),
    the champion, the registered version and which steps were computed vs reused from cache.
    """
    from nash_core.config import load_config

    cfg = cfg or load_config(config_path, overrides)  # a bad config fails before anything starts
    Path(workdir).mkdir(parents=True, exist_ok=True)
    prepare_environment(workdir)
    from tasks.preflight import preflight

    preflight(cfg, workdir)  # bad data / model / store / disk: fails here, before Prefect starts
    prepare_temporary_prefect_db()
    from flows.sweep_flow import run_configured
    from nash_core.runtime import stop_on_signals

    # SIGINT/SIGTERM: training in Prefect's worker threads checkpoints at its next step and
    # stops, no new step starts, the runs are closed FAILED; KeyboardInterrupt reaches the CLI.
    with stop_on_signals(), tracking_failures_in_one_line(cfg, workdir):
        return run_configured(str(config_path), list(overrides), str(Path(workdir).resolve()), cfg)


@contextlib.contextmanager
def tracking_failures_in_one_line(cfg, workdir: str):
    """A tracking store that stopped answering mid-sweep (after MLflow's own bounded retries
    and the tasks' transient retries) ends the sweep with one line, not a traceback: the
    finished steps are cached, so the same command completes the sweep once it is back."""
    from mlflow.exceptions import MlflowException

    from nash_core.errors import TrackingError
    from nash_mlflow.tracking import resolve_tracking_uri

    try:
        yield
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"the MLflow tracking store {resolve_tracking_uri(cfg, workdir)} failed during the "
            f"sweep ({first}). Finished steps are cached: run the same command again once it "
            "answers, and the sweep continues where it stopped (the stopped sweep's runs are "
            "marked FAILED then)"
        ) from exc
