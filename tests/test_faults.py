"""Faults a scheduled pipeline meets (issue 27): a damaged cached result, a full disk, two
sweeps at once, a tracking server that restarts. Fast checks of the parts first; then real
sweeps (`nash run` subprocesses, real MLflow stores, real training) on the test session's one
Prefect server (as reliability_tiny explains: a temporary server per sweep costs minutes on a
busy 2-core machine); the damaged-cache and concurrency tests share one lone smoke sweep."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from reliability_tiny import env as session_env
from safetensors.torch import load_file, save_file
from sweep_tiny import BIN, REPO, TINY, nash, with_overrides

from nash_core.errors import DiskFullError
from tasks.cache import DONE, cache_key, run_cached

CODE = ("nash_core.io",)


def _weights_step(calls: list):
    """A step writing a 6 MiB safetensors file (sampled hash) and a small config (whole)."""

    def compute(rdir: Path) -> dict:
        calls.append(rdir)
        gen = torch.Generator().manual_seed(0)
        save_file({"w": torch.randn(1536, 1024, generator=gen)}, rdir / "model.safetensors")
        (rdir / "config.json").write_text(json.dumps({"d_model": 64}))
        (rdir / ".work").mkdir(exist_ok=True)
        (rdir / ".work" / "scratch").write_text("not part of the result")
        return {"model": "model.safetensors"}

    return compute


@pytest.mark.parametrize(
    "harm",
    [
        pytest.param(lambda d: os.truncate(d / "model.safetensors", 100), id="truncated"),
        pytest.param(lambda d: (d / "config.json").unlink(), id="deleted"),
        pytest.param(lambda d: (d / "config.json").write_text('{"d_model": 65}'), id="edited"),
        pytest.param(lambda d: (d / DONE).write_text('{"kind": "fine'), id="marker"),
    ],
)
def test_damaged_result_is_moved_aside_and_recomputed(tmp_path, caplog, harm):
    calls: list = []
    key = cache_key("finetune", CODE, a=1)
    first = run_cached(tmp_path, "finetune", key, _weights_step(calls))
    rdir = Path(first.path)
    committed = json.loads((rdir / DONE).read_text())["files"]
    assert set(committed) == {"model.safetensors", "config.json"}  # hidden work dirs left out
    original = {f: (rdir / f).read_bytes() for f in committed}

    assert run_cached(tmp_path, "finetune", key, _weights_step(calls)).cached  # intact: reused
    harm(rdir)
    with caplog.at_level(logging.WARNING, logger="tasks.cache"):
        again = run_cached(tmp_path, "finetune", key, _weights_step(calls))
    assert not again.cached and len(calls) == 2 and again.path == first.path
    [line] = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert "finetune" in line and str(rdir) in line and "recomputing" in line
    [aside] = (tmp_path / "damaged").iterdir()
    assert aside.name.startswith(rdir.name) and (aside / DONE).is_file()  # kept, not deleted
    assert {f: (rdir / f).read_bytes() for f in committed} == original  # recomputed identically
    assert (rdir / ".lock").is_file()


def test_full_verification_finds_an_edit_inside_a_large_file(tmp_path, monkeypatch):
    """Sampled hashes miss an edit between their blocks; NASH_VERIFY_CACHE=full does not."""
    calls: list = []
    key = cache_key("finetune", CODE, a=2)
    rdir = Path(run_cached(tmp_path, "finetune", key, _weights_step(calls)).path)
    with open(rdir / "model.safetensors", "r+b") as f:  # between the first two sampled blocks
        f.seek(200_000)
        byte = f.read(1)
        f.seek(200_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert run_cached(tmp_path, "finetune", key, _weights_step(calls)).cached
    monkeypatch.setenv("NASH_VERIFY_CACHE", "full")
    assert not run_cached(tmp_path, "finetune", key, _weights_step(calls)).cached


def test_a_marker_without_a_manifest_is_trusted(tmp_path):
    """Results committed before manifests were recorded are used as before."""
    calls: list = []
    key = cache_key("finetune", CODE, a=3)
    rdir = Path(run_cached(tmp_path, "finetune", key, _weights_step(calls)).path)
    done = json.loads((rdir / DONE).read_text())
    del done["files"]
    (rdir / DONE).write_text(json.dumps(done))
    assert run_cached(tmp_path, "finetune", key, _weights_step(calls)).cached


def test_disk_full_in_a_step_is_one_line_and_leaves_no_marker(tmp_path):
    def compute(rdir: Path) -> dict:
        (rdir / "part").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(rdir / "model.safetensors"))

    key = cache_key("stage", CODE, a=4)
    with pytest.raises(DiskFullError) as info:
        run_cached(tmp_path, "stage", key, compute)
    msg = str(info.value)
    assert "\n" not in msg and "step stage" in msg and "MB are free" in msg
    assert "needed about 0.0 MB" in msg
    assert not (tmp_path / "runs" / f"stage-{key}" / DONE).exists()


# --------------------------------------------------------------------------- real sweeps

#: Metrics that measure time or memory (differ between runs); the rest must be reproducible.
TIMING = re.compile(r"latency|speedup|_per_s|(^|_)ms(_|$)|_ms|mem|cost")


def start(workdir: Path, env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        cmd = [
            BIN / "nash",
            "run",
            "configs/smoke.yaml",
            "--workdir",
            workdir,
            *with_overrides(TINY),
        ]
        return subprocess.Popen(
            list(map(str, cmd)), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def run_all(workdir: Path, env: dict, n: int = 1) -> list[str]:
    """``n`` identical `nash run` started at the same moment; their outputs (all must pass)."""
    logs = [
        workdir.parent / f"{workdir.name}-{len(list(workdir.parent.glob('*.log')))}-{i}.log"
        for i in range(n)
    ]
    procs = [start(workdir, env, log) for log in logs]
    outs = []
    for proc, log in zip(procs, logs):
        rc = proc.wait(900)
        outs.append(log.read_text())
        assert rc == 0, outs[-1][-4000:]
    return outs


def steps(out: str) -> tuple[int, int]:
    m = re.search(r"steps: (\d+) computed, (\d+) reused", out)
    assert m, out[-2000:]
    return int(m[1]), int(m[2])


def store(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def sweep_results(workdir: Path) -> list[dict]:
    """Per finished sweep: its candidates' labels -> reproducible metrics."""
    c = store(workdir)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert [r for r in runs if r.info.status == "RUNNING"] == [], "a run was left RUNNING"
    out = []
    for sweep in (r for r in runs if r.data.tags.get("nash.kind") == "sweep"):
        assert sweep.info.status == "FINISHED"
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
        labels = [r.data.tags["nash.label"] for r in kids]
        assert len(labels) == len(set(labels)), labels
        out.append(
            {
                r.data.tags["nash.label"]: {
                    k: v for k, v in r.data.metrics.items() if not TIMING.search(k)
                }
                for r in kids
            }
        )
    return out


@pytest.fixture(scope="module")
def lone(tmp_path_factory):
    """One smoke sweep run alone on a new workdir and store: (workdir, env, output)."""
    root = tmp_path_factory.mktemp("lone")
    env = session_env(root)
    [out] = run_all(root / "work", env)
    return root / "work", env, out


#: Keys of recorded timings (wall-clock seconds differ between two computations of a step).
CLOCK = re.compile(r"elapsed|seconds|_s$|time|per_s|_ms|latency")


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if not CLOCK.search(str(k))}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _same_file(a: Path, b: Path) -> bool:
    """Same content, apart from recorded timings: safetensors by their tensors (which of two
    tied names a file keeps, e.g. T5's shared embedding, varies by process), torch files by
    their tensors, JSON without timing keys, anything else byte for byte."""
    if a.suffix == ".safetensors":
        return _equal(load_file(a), load_file(b))
    if a.suffix == ".pt":
        ta, tb = (torch.load(f, weights_only=True) for f in (a, b))
        if a.name == "rng.pt":  # Python's global `random` is shared with Prefect, MLflow, ...
            ta, tb = ({k: v for k, v in t.items() if k != "python"} for t in (ta, tb))
        return _equal(ta, tb)
    if a.suffix == ".json":
        return _untimed(json.loads(a.read_text())) == _untimed(json.loads(b.read_text()))
    if a.suffix == ".jsonl":
        lines = [[_untimed(json.loads(x)) for x in f.read_text().splitlines()] for f in (a, b)]
        return lines[0] == lines[1]
    return a.read_bytes() == b.read_bytes()


@pytest.mark.slow
def test_damaged_cached_results_in_a_sweep_are_recomputed(lone, tmp_path):
    """A truncated weight file, a deleted file and an edited config.json in three cached
    results: the same command reports each in one line, moves it aside, recomputes it
    (bit-identical to what was committed) and finishes with the same candidates."""
    work, env, _ = lone
    runs = work / "runs"
    [finetune] = runs.glob("finetune-*")
    [export] = runs.glob("export-*")
    [teacher] = runs.glob("teacher-*")
    harmed = {
        finetune: next(finetune.rglob("model.safetensors")),
        export: next(
            p
            for p in export.rglob("*")
            if p.is_file() and p.name.endswith(".json") and not p.name.startswith("_")
        ),
        teacher: next(teacher.rglob("config.json")),
    }
    committed = {d: json.loads((d / DONE).read_text())["files"] for d in harmed}
    ref = tmp_path / "undamaged"
    for d in harmed:
        shutil.copytree(d, ref / d.name, ignore=shutil.ignore_patterns(".*"))
    os.truncate(harmed[finetune], 100)
    harmed[export].unlink()
    cfg = json.loads(harmed[teacher].read_text())
    harmed[teacher].write_text(json.dumps({**cfg, "d_ff": cfg.get("d_ff", 128) + 1}))
    before = sweep_results(work)

    [out] = run_all(work, env)
    lines = [line for line in out.splitlines() if "is damaged" in line]
    for d in harmed:
        kind = d.name.split("-")[0]
        [line] = [line for line in lines if str(d) in line]
        assert f"cached {kind} result" in line and "recomputing" in line
        assert len(list((work / "damaged").glob(f"{d.name}.*"))) == 1  # kept for inspection
        for rel in committed[d]:
            assert _same_file(d / rel, ref / d.name / rel), f"{d.name}/{rel} recomputed differently"
    assert steps(out)[0] == 3, out[-3000:]  # only the damaged steps were recomputed
    after = sweep_results(work)
    assert len(after) == 2 and all(r == before[0] for r in after), "candidates changed"


@pytest.mark.slow
def test_concurrent_sweeps_on_a_new_then_an_existing_store(lone, tmp_path):
    """Two `nash run` started together on one new workdir and store, then again on it (now
    existing): all finish with the lone sweep's candidates, every step computed once."""
    lone_work, _, lone_out = lone
    work, env = tmp_path / "work", session_env(tmp_path)
    outs = run_all(work, env, n=2)
    computed = [steps(out)[0] for out in outs]
    n_steps = steps(lone_out)[0]
    assert sum(computed) == n_steps, computed  # each step computed by one of them
    names = sorted(p.parent.name for p in (work / "runs").glob("*/_done.json"))
    assert names == sorted(p.parent.name for p in (lone_work / "runs").glob("*/_done.json"))
    [expected] = sweep_results(lone_work)[:1]
    assert sweep_results(work) == [expected, expected]

    outs = run_all(work, env, n=2)  # the store exists now; every step is a hit
    assert [steps(out) for out in outs] == [(0, sum(steps(lone_out)))] * 2
    assert sweep_results(work) == [expected] * 4


@pytest.mark.slow
def test_damaged_registered_model_is_refused_naming_its_version(lone):
    """The champion's logged weights truncated in the artifact store: `nash serve` and `nash
    benchmark --sweep` stop with one line naming the registered version, exit 2. (The promotion
    gate fetches the champion with the same ``registry.fetch_model``; it only fetches when a
    different candidate challenges it, which a re-run of the same sweep does not produce.)"""
    work, env, _ = lone
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = store(work)
    champion = client.get_model_version_by_alias("nash-smoke", "champion")
    run = client.get_run(champion.run_id)
    root = Path(run.info.artifact_uri.removeprefix("file://")) / "model" / "artifacts"
    weights = next(root.rglob("model.safetensors"))
    good = weights.read_bytes()
    sweep_id = run.data.tags["mlflow.parentRunId"]
    named = f"nash-smoke version {champion.version}"
    try:
        os.truncate(weights, 100)
        for args in (
            ["serve", "--tracking-uri", uri],
            ["benchmark", "--sweep", sweep_id, "--tracking-uri", uri, "--hardware-name", "x"],
        ):
            res = nash(args, env)
            assert res.returncode == 2, (args, res.stdout[-2000:], res.stderr[-3000:])
            [line] = [x for x in res.stderr.splitlines() if x.startswith("nash: error:")]
            assert named in line and "damaged" in line and "model.safetensors" in line, line
    finally:
        weights.write_bytes(good)
