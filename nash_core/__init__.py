"""NASH pruning library: pure PyTorch / transformers (no Prefect, no MLflow)."""

from nash_core.progress import quiet_library_progress

quiet_library_progress()  # NASH_NO_PROGRESS=1 quiets transformers' and datasets' bars as well
