"""The smallest sweep that still goes through every step, for tests of how sweeps are run
(schedules, watch, remote tracking, task runners) rather than of what they compute."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(
    db: Path, port: int, log: Path, env: dict, artifacts: Path | None = None
) -> subprocess.Popen:
    """THE test helper for a real `mlflow server` on 127.0.0.1:port over the SQLite store ``db``
    (artifacts proxied into ``artifacts`` when given), returned once /health answers. Started in
    its own session, so a test can kill it and its workers at once (``os.killpg``)."""
    cmd = [BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}"]
    if artifacts is not None:
        cmd += ["--artifacts-destination", artifacts]
    cmd += ["--host", "127.0.0.1", "--port", port, "--workers", "1"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            list(map(str, cmd)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.5)


@contextlib.contextmanager
def model_server(argv: list, port: int, env: dict, cwd: Path | None = None, wait_s: float = 120):
    """THE test helper for a model server (`nash serve`, `mlflow models serve`): start ``argv``,
    yield once http://127.0.0.1:port/health answers, stop it afterwards (terminate, then kill)."""
    server = subprocess.Popen(
        list(map(str, argv)),
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + wait_s
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"model server not healthy after {wait_s} s"
                time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
