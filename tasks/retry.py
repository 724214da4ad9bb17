"""When a Prefect task may retry: only for failures that can go away by themselves.

Network / file-system hiccups and an unreachable tracking server are transient; a bad config,
bad data or diverging training (``NashError``) is not, and retrying training maths would only
repeat the same failure slower. Training tasks therefore get no retries at all.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException

from nash_core.errors import NashError, TrackingError

#: OSError covers ConnectionError and TimeoutError; TrackingError is decided in is_transient.
TRANSIENT = (OSError, MlflowException)
RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TrackingError):
        return True
    return isinstance(exc, TRANSIENT) and not isinstance(exc, NashError)


def retry_transient(task, task_run, state) -> bool:
    """``retry_condition_fn`` for Prefect tasks that touch the network, disk or tracking."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False


def transient_retries() -> dict:
    """Task options: bounded retries, only for transient failures."""
    return {**RETRIES, "retry_condition_fn": retry_transient}
