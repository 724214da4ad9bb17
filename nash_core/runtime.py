"""Device choice, seeding and thread settings shared by every stage."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(pref: str = "auto") -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from nash_core.errors import NashError

            raise NashError("experiment.device is 'cuda' but torch sees no CUDA device; "
                            "use device: auto or cpu")
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


def progress_disabled() -> bool:
    return os.environ.get("NASH_NO_PROGRESS", "") not in ("", "0", "false")
