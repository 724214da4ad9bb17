"""A tiny sweep with a pruning arm of two stages, run by `nash run` in subprocesses, and what it
leaves behind in a comparable form -- for the crash/resume and determinism tests.

Stages are 30 steps with a checkpoint every 5, long enough to be interrupted in the middle. The
uninterrupted reference sweep is computed once per test session and shared, and every sweep of
the session talks to one real Prefect server on 127.0.0.1 (``PREFECT_API_URL``, as a team with a
server runs it): Prefect's temporary server costs 15-30 s of start-up per sweep on this machine,
and its own start and stop are covered by test_sweep_e2e.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from sweep_tiny import BIN, REPO, clean_env, with_overrides

CRASH = [
    "data.demo.num_dialogues=400",
    "data.max_samples={validation: 8, test: 8}",
    "teacher.train.max_steps=3",
    "pruning.arms=[{method: nash, decoder_layers: 1, targets: [0.2, 0.3]}]",
    "pruning.stage.train={max_steps: 30, batch_size: 8, lr: 1.0e-3, eval_every: 10, "
    "eval_examples: 8, checkpoint_every: 5, log_every: 5}",
    "finetune.train.max_steps=2",
    "evaluation.bootstrap_samples=20",
    "benchmark={batch_sizes: [1], num_inputs: 2, warmup: 0, repeats: 1, fixed_new_tokens: 4}",
]
LABELS = {"teacher", "nash-k1@0.2", "nash-k1@0.3"}
#: Metrics that measure time or memory; everything else a sweep logs must be reproducible.
TIMING = re.compile(r"latency|speedup|_per_s|(^|_)ms(_|$)|_ms|mem|cost")
_session: dict = {}


def _prefect_server(home: Path) -> str:
    """Start ``prefect server start`` on a free localhost port once; its API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home.mkdir(parents=True, exist_ok=True)
    with (home / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=clean_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    atexit.register(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGTERM))
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(url + "/health", timeout=3) as r:
                if r.status == 200:
                    return url
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the Prefect server did not answer /health within 180 s")


def env(tmp_root: Path) -> dict:
    """A fresh user's environment, pointed at the session's Prefect server."""
    if "api" not in _session:
        _session["api"] = _prefect_server(tmp_root / "prefect-server")
    return clean_env(tmp_root, PREFECT_API_URL=_session["api"])


def start(workdir: Path, environ: dict, *extra: str) -> subprocess.Popen:
    """`nash run` of the crash config in its own process group (so a kill takes its children)."""
    attempt = len(list(workdir.parent.glob(f"{workdir.name}-attempt*.log"))) + 1
    log = workdir.parent / f"{workdir.name}-attempt{attempt}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "nash"),
                "run",
                "configs/smoke.yaml",
                "--workdir",
                str(workdir),
                *with_overrides(CRASH + list(extra)),
            ],
            cwd=REPO,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    """Exit code and output of a started sweep."""
    rc = proc.wait(timeout)
    return rc, proc.log.read_text()


def sweep(workdir: Path, environ: dict, *extra: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    rc, log = finish(start(workdir, environ, *extra))
    return rc, log, time.monotonic() - t0


def reference(tmp_path_factory) -> Path:
    """The uninterrupted sweep's workdir, computed once per session."""
    if "reference" not in _session:
        root = tmp_path_factory.mktemp("reference")
        rc, log, seconds = sweep(root / "work", env(root))
        assert rc == 0, log[-5000:]
        _session["reference"] = root / "work"
        print(f"\nreference sweep: {seconds:.0f} s")
    return _session["reference"]


def wait_for(condition, proc: subprocess.Popen, timeout: float = 600, poll: float = 0.02):
    """Poll ``condition()`` until it returns something truthy; fail if the sweep ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"the sweep ended (rc {proc.returncode}) before the condition"
        time.sleep(poll)
    raise AssertionError("timed out")


def stage_checkpoints(workdir: Path) -> dict[str, int]:
    """Unfinished pruning stages with a training checkpoint: result dir name -> step."""
    import json

    out = {}
    for state in (workdir / "runs").glob("stage-*/.stage.work/checkpoint/state.json"):
        rdir = state.parents[2]
        if not (rdir / "_done.json").is_file():
            out[rdir.name] = json.loads(state.read_text())["step"]
    return out


def done_markers(workdir: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in (workdir / "runs").glob("*/_done.json")}


# --------------------------------------------------------------------------- comparing results
def client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def all_runs(workdir: Path) -> list:
    c = client(workdir)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


def finished_sweep(workdir: Path):
    sweeps = [
        r
        for r in all_runs(workdir)
        if r.data.tags.get("nash.kind") == "sweep" and r.info.status == "FINISHED"
    ]
    assert len(sweeps) == 1, [r.info.status for r in sweeps]
    return sweeps[0]


def candidates(workdir: Path) -> dict:
    """The finished sweep's candidate runs by label (a duplicated label fails)."""
    parent = finished_sweep(workdir).info.run_id
    runs = [r for r in all_runs(workdir) if r.data.tags.get("mlflow.parentRunId") == parent]
    labels = [r.data.tags["nash.label"] for r in runs]
    assert sorted(labels) == sorted(set(labels)), f"duplicated candidates: {labels}"
    return {r.data.tags["nash.label"]: r for r in runs}


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_results(ours: Path, reference: Path) -> None:
    """Same steps, bit-identical weights and masks, same candidates and non-timing metrics."""
    runs_a, runs_b = ours / "runs", reference / "runs"
    assert sorted(p.name for p in runs_a.iterdir()) == sorted(p.name for p in runs_b.iterdir())
    weights = sorted(
        p.relative_to(runs_b)
        for p in runs_b.rglob("*.safetensors")
        if "/." not in str(p.relative_to(runs_b))
    )
    assert len(weights) >= 6, weights  # teacher, 2 stages, 2 exports, 2 fine-tunes
    for rel in weights:
        assert _equal(load_file(runs_a / rel), load_file(runs_b / rel)), f"weights differ: {rel}"
    masks = sorted(p.relative_to(runs_b) for p in runs_b.rglob("nash_masks.pt"))
    assert len(masks) == 2, masks
    for rel in masks:
        assert _equal(
            torch.load(runs_a / rel, weights_only=True), torch.load(runs_b / rel, weights_only=True)
        ), f"masks differ: {rel}"

    ca, cb = candidates(ours), candidates(reference)
    assert set(ca) == set(cb) == LABELS
    for label in LABELS:
        ma = {k: v for k, v in ca[label].data.metrics.items() if not TIMING.search(k)}
        mb = {k: v for k, v in cb[label].data.metrics.items() if not TIMING.search(k)}
        assert ma == mb, (
            label,
            {k: (ma.get(k), mb.get(k)) for k in ma.keys() | mb.keys() if ma.get(k) != mb.get(k)},
        )
        assert {"rougeL", "encoder_sparsity", "params_total"} <= ma.keys()
    for label in ("nash-k1@0.2", "nash-k1@0.3"):  # whole training curves too
        hist = [
            [
                (m.step, m.value)
                for m in client(w).get_metric_history(c[label].info.run_id, "stage/train_loss")
            ]
            for w, c in ((ours, ca), (reference, cb))
        ]
        assert sorted(hist[0]) == sorted(hist[1]) and len(hist[0]) == 6, (label, hist)
