"""The smallest sweep that still goes through every step, for tests of how sweeps are run
(schedules, watch, remote tracking, task runners) rather than of what they compute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = [
    "data.demo.num_dialogues=400",
    "data.max_samples={validation: 8, test: 8}",
    "teacher.train.max_steps=3",
    "pruning.arms=[{method: sft, decoder_layers: 1}]",
    "pruning.stage.train.max_steps=2",
    "finetune.train.max_steps=2",
    "evaluation.bootstrap_samples=20",
    "benchmark={batch_sizes: [1], num_inputs: 2, warmup: 0, repeats: 2, fixed_new_tokens: 4}",
]


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a fresh user shell: no Prefect/MLflow settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        NASH_NO_PROGRESS="1",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def nash(args: list, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `nash` console script as a user would, from the repository root."""
    return subprocess.run(
        [str(BIN / "nash"), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def with_overrides(overrides: list[str]) -> list[str]:
    out = []
    for o in overrides:
        out += ["--set", o]
    return out
