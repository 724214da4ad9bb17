"""A model logged to MLflow carries a record of its files; whoever loads it checks them.

:func:`record` goes into the logged pyfunc model's ``model_config`` (key ``files``: size,
sampled hash and SHA-256 of every file of the weights directory, :mod:`nash_core.integrity`),
so it travels with the model wherever MLflow copies it. ``nash serve``, ``nash benchmark
--sweep`` and the promotion gate call :func:`check_model` on the copy they fetched; a damaged
artifact (a truncated weight file, a deleted or edited file) is a :class:`ModelError` naming the
registered version (exit code 2) instead of a loader traceback. Models logged before the record
existed have none and are loaded as before.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nash_core.errors import ModelError
from nash_core.integrity import damage, manifest

FILES_KEY = "files"


def record(model_dir: str | Path) -> dict[str, dict]:
    """The record of a weights directory, for the logged model's ``model_config``."""
    return manifest(model_dir)


def logged_record(client: MlflowClient, run_id: str, artifact: str = "model") -> dict | None:
    """The record in a run's logged model (its MLmodel), or None (none recorded / unreadable:
    the caller's own checks report a missing model)."""
    with tempfile.TemporaryDirectory(prefix="nash-mlmodel-") as tmp:
        try:
            text = Path(client.download_artifacts(run_id, f"{artifact}/MLmodel", tmp)).read_text()
            flavor = yaml.safe_load(text)["flavors"]["python_function"]
        except (MlflowException, OSError, ValueError, KeyError, TypeError):
            return None
    return (flavor.get("config") or {}).get(FILES_KEY)


def describe_model(client: MlflowClient, run_id: str) -> str:
    """``registered model NAME version N (run ID)``, every version registered from the run."""
    try:
        versions = client.search_model_versions(f"run_id = '{run_id}'")
    except MlflowException:
        versions = []
    names = ", ".join(f"{v.name} version {v.version}" for v in versions)
    return f"registered model {names} (run {run_id})" if names else f"the model of run {run_id}"


def check_model(
    client: MlflowClient, run_id: str, local_dir: str | Path, files: dict | None = None
) -> None:
    """Raise :class:`ModelError` naming the version when ``local_dir`` (the run's fetched
    weights directory) no longer holds what was logged."""
    files = files if files is not None else logged_record(client, run_id)
    if not files:
        return
    problem = damage(local_dir, files)
    if problem:
        raise ModelError(
            f"{describe_model(client, run_id)}: its logged model artifact is damaged "
            f"({problem}). Restore the artifact store, or register a good version (re-run the "
            "sweep; `nash promote VERSION` / `nash rollback` move the alias meanwhile)"
        )
