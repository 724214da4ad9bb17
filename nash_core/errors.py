"""Errors a user can act on. The CLI prints the message and exits 2 (no traceback)."""


class NashError(Exception):
    """Base class: the message names the culprit and says how to fix it."""


class ConfigError(NashError, ValueError):
    """A config could not be read or validated. ``problems`` holds one line per bad field.

    Also a ``ValueError`` (what a bad value is in Python), so callers that validate values keep
    catching it; the CLI catches it as a :class:`NashError` like every other user error.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {source}: {len(problems)} problem(s)\n{lines}")


class DataError(NashError):
    """A dataset, split, column or row is unusable."""


class ModelError(NashError):
    """A base model / model directory is missing, corrupt or unsupported."""


class TrainingError(NashError):
    """Training cannot go on (NaN/inf loss after the allowed bad steps, ...)."""


class TrackingError(NashError):
    """The MLflow tracking store cannot be reached or used."""


class DiskFullError(NashError):
    """The disk filled up while a step was writing its result."""
