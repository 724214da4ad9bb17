"""Whether to draw progress bars (``NASH_NO_PROGRESS``), for nash's own and the libraries'.

Torch-free on purpose: ``nash_core/__init__`` applies it on import, and importing the config
schema (``nash validate``) must stay fast.
"""

from __future__ import annotations

import os
import sys


def progress_disabled() -> bool:
    return os.environ.get("NASH_NO_PROGRESS", "") not in ("", "0", "false")


def quiet_library_progress() -> None:
    """With ``NASH_NO_PROGRESS`` set, silence the libraries' progress bars too (transformers'
    "Loading weights", datasets' "Map", hub downloads, MLflow's artifact copies), not only
    nash's own.

    Environment defaults cover libraries imported later; the switches cover those already in.
    """
    if not progress_disabled():
        return
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read per call
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
