"""Device choice, seeding, thread settings and the process-wide stop request shared by every
stage."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Iterator

import numpy as np
import torch


def pick_device(pref: str = "auto") -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from nash_core.errors import NashError

            raise NashError(
                "experiment.device is 'cuda' but torch sees no CUDA device; use device: auto or cpu"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------- stopping
_stop_reason: str | None = None
_signal_depth = 0


def request_stop(reason: str) -> None:
    """Ask every long loop of this process to stop at its next safe point (with a checkpoint)."""
    global _stop_reason
    _stop_reason = _stop_reason or reason


def stop_requested() -> str | None:
    """Why a stop was requested (e.g. ``"SIGTERM"``), or None."""
    return _stop_reason


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :func:`request_stop`; a second signal raises KeyboardInterrupt.

    Why process-wide: only the main thread receives signals and may install handlers, but
    Prefect runs tasks -- training included -- in worker threads, so the training loop polls
    :func:`stop_requested` instead of owning a handler. In other threads this block does
    nothing. The outermost block restores the previous handlers and clears the request, so the
    next run in the same process starts clean.
    """
    global _signal_depth, _stop_reason
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _stop_reason:
            raise KeyboardInterrupt
        request_stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _signal_depth += 1
    try:
        yield
    finally:
        _signal_depth -= 1
        for s, h in previous.items():
            signal.signal(s, h)
        if _signal_depth == 0:
            _stop_reason = None
