"""Entry point of a sweep: ``run_sweep(config_path, overrides, workdir) -> summary dict``.

Prepares the environment *before* Prefect and MLflow are imported, because importing them
fixes their homes and telemetry: without ``PREFECT_API_URL`` Prefect starts a temporary local
server whose database lives in ``PREFECT_HOME`` -- put under the workdir unless the user chose
one -- and with ``PREFECT_API_URL`` set the same flow runs on that server unchanged.
The flow itself is in :mod:`flows.sweep_flow`.
"""

from __future__ import annotations

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


def run_sweep(config_path: str, overrides: list[str], workdir: str) -> dict:
    """Validate the config, run the sweep flow with the configured task runner, return a summary.

    The summary holds the MLflow ids (``sweep_run_id``, ``experiment_id``, ``tracking_uri``),
    the champion, the registered version and which steps were computed vs reused from cache.
    """
    from nash_core.config import load_config

    cfg = load_config(config_path, overrides)  # a bad config fails before anything starts
    Path(workdir).mkdir(parents=True, exist_ok=True)
    prepare_environment(workdir)
    from tasks.preflight import preflight

    preflight(cfg, workdir)  # bad data / model / store / disk: fails here, before Prefect starts
    from flows.sweep_flow import run_configured
    from nash_core.runtime import stop_on_signals

    # SIGINT/SIGTERM: training in Prefect's worker threads checkpoints at its next step and
    # stops, no new step starts, the runs are closed FAILED; KeyboardInterrupt reaches the CLI.
    with stop_on_signals():
        return run_configured(str(config_path), list(overrides), str(Path(workdir).resolve()))
