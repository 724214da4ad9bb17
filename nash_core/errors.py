"""Errors a user can act on. The CLI prints the message and exits 2 (no traceback)."""


class NashError(Exception):
    """Base class: the message names the culprit and says how to fix it."""


class DataError(NashError):
    """A dataset, split, column or row is unusable."""


class ModelError(NashError):
    """A base model / model directory is missing, corrupt or unsupported."""


class TrainingError(NashError):
    """Training cannot go on (NaN/inf loss after the allowed bad steps, ...)."""


class TrackingError(NashError):
    """The MLflow tracking store cannot be reached or used."""
