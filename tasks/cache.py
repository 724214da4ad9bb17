"""Content-addressed task results: ``<workdir>/runs/<kind>-<key>/`` plus a done-marker.

Why not Prefect's result cache: it needs persisted, picklable results and a cache policy
without the run id, its keys live in the Prefect server's database (the temporary server's
database is per PREFECT_HOME; a configured server is shared by other projects), and a cached
result is a pickle of a path that may no longer exist. Here the cache is the files themselves:

- the key hashes everything that determines a result -- content fingerprints of the base model
  and data, the task's config sections (``NashConfig.section_hash``), the keys of the upstream
  results, and :func:`code_version` of the modules the step runs -- so an unchanged step is
  found again by any run, on any Prefect server, and a changed input gets a new directory
  (old results stay, nothing is overwritten);
- a step writes into its directory and commits by writing ``_done.json`` atomically, last; a
  directory without the marker is unfinished, and re-running the step re-enters it, so the
  training loop's own checkpoints there let it resume instead of restarting;
- a per-directory file lock makes two sweeps on one workdir compute a step once;
- once a stop was requested (SIGINT/SIGTERM, :func:`nash_core.runtime.stop_requested`) no new
  step starts: finished results are still returned, anything else raises KeyboardInterrupt.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import nash_core
from nash_core.io import atomic_write_json, read_json
from nash_core.runtime import stop_requested

DONE = "_done.json"


class StepResult(BaseModel):
    """What a task hands downstream: where its result lives and a little metadata."""

    kind: str
    key: str
    path: str
    meta: dict[str, Any] = {}
    cached: bool = False
    seconds: float = 0.0


def _imports(tree: ast.AST) -> set[str]:
    """``nash_core`` modules a module imports anywhere (lazy, function-level imports too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nash_core.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nash_core":
                found |= {f"nash_core.{a.name}" for a in node.names}
            elif node.module.startswith("nash_core."):
                found.add(node.module)
    return found


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _module_file(name: str) -> Path | None:
    root = Path(nash_core.__file__).parent
    rel = Path(*name.split(".")[1:])
    for cand in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@cache
def code_version(*modules: str) -> str:
    """Hash of the code that computes a step: ``modules`` and every ``nash_core`` module they
    import, transitively, compared as syntax trees without docstrings.

    So a comment, docstring or formatting change recomputes nothing, a change to the maths
    recomputes exactly the steps that run it, and tasks/flows (orchestration, logging) never
    invalidate results.
    """
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        todo += sorted(_imports(tree))
        seen[name] = ast.dump(_strip_docstrings(tree))
    blob = json.dumps(seen, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_key(kind: str, code: tuple[str, ...], **parts: Any) -> str:
    """Stable key of a step from the JSON of its determining parts and its code version."""
    blob = json.dumps(
        {"kind": kind, "code": code_version(*code), **parts}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resumable_checkpoints(rdir: Path) -> dict[str, int]:
    """Training checkpoints an interrupted attempt left in ``rdir`` (relative path -> step).

    Recorded in the done-marker as ``resumed_from``, so a crash and its resume are visible
    afterwards (empty for a step computed in one go).
    """
    return {
        str(p.parent.relative_to(rdir)): read_json(p)["step"]
        for p in sorted(rdir.rglob("checkpoint/state.json"))
    }


def run_cached(
    workdir: str | Path, kind: str, key: str, compute: Callable[[Path], dict[str, Any]]
) -> StepResult:
    """Return the finished result for ``key``, or run ``compute(result_dir) -> meta`` once.

    ``meta`` must be JSON-serialisable and small (paths inside the directory, fingerprints,
    metrics); it is stored in the done-marker and returned on every later hit.
    """
    rdir = Path(workdir).resolve() / "runs" / f"{kind}-{key}"
    rdir.mkdir(parents=True, exist_ok=True)
    with open(rdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = rdir / DONE
        if marker.is_file():
            done = read_json(marker)
            return StepResult(
                kind=kind,
                key=key,
                path=str(rdir),
                meta=done["meta"],
                cached=True,
                seconds=done["seconds"],
            )
        if stop_requested():
            raise KeyboardInterrupt(f"{stop_requested()} received: not starting {kind}-{key}")
        resumed = resumable_checkpoints(rdir)
        start = time.perf_counter()
        meta = compute(rdir)
        seconds = round(time.perf_counter() - start, 3)
        atomic_write_json(
            marker,
            {
                "kind": kind,
                "key": key,
                "meta": meta,
                "seconds": seconds,
                "resumed_from": resumed,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    return StepResult(kind=kind, key=key, path=str(rdir), meta=meta, cached=False, seconds=seconds)
