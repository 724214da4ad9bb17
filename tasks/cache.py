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
- the done-marker records what the result holds (:func:`manifest`: every file's size, a
  sampled hash and a full SHA-256); a hit is checked against it before it is used
  (:func:`damage`: sizes and sampled hashes by default, full hashes with
  ``NASH_VERIFY_CACHE=full``), and a result that no longer matches is moved aside to
  ``<workdir>/damaged/`` (kept for inspection, never deleted), reported in one line and
  recomputed in place;
- once a stop was requested (SIGINT/SIGTERM, :func:`nash_core.runtime.stop_requested`) no new
  step starts: finished results are still returned, anything else raises KeyboardInterrupt.
"""

from __future__ import annotations

import ast
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import nash_core
from nash_core.errors import DiskFullError
from nash_core.integrity import damage, manifest
from nash_core.io import atomic_write_json, read_json
from nash_core.runtime import stop_requested

log = logging.getLogger(__name__)

DONE = "_done.json"
VERIFY_ENV = "NASH_VERIFY_CACHE"  # "full": re-hash whole files on reuse; "off": trust markers
DAMAGED = "damaged"


class StepResult(BaseModel):
    """What a task hands downstream: where its result lives and a little metadata."""

    kind: str
    key: str
    path: str
    meta: dict[str, Any] = {}
    cached: bool = False
    seconds: float = 0.0


#: Registry packages: their ``__init__`` imports every member to register it. A step hashes the
#: registry's own text but not its members: a step names the member it runs in its ``code``
#: (tasks/prune.py: the shared stage runner and the method's own module).
REGISTRIES = ("nash_core.methods",)


def _imports(tree: ast.AST, root: Path | None = None) -> set[str]:
    """``nash_core`` modules a module imports anywhere (lazy, function-level imports too);
    ``from nash_core.pkg import mod`` counts as an import of the module ``nash_core.pkg.mod``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nash_core.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nash_core" or node.module.startswith("nash_core."):
                found.add(node.module)
                subs = {f"{node.module}.{a.name}" for a in node.names}
                found |= {m for m in subs if _module_file(m, root) is not None}
    return found - {"nash_core"}


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


def _module_file(name: str, root: Path | None = None) -> Path | None:
    root = root or Path(nash_core.__file__).parent
    rel = Path(*name.split(".")[1:])
    for cand in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def code_version(*modules: str, root: str | Path | None = None) -> str:
    """Hash of the code that computes a step: ``modules`` and every ``nash_core`` module they
    import, transitively, compared as syntax trees without docstrings (the members of a
    registry package, :data:`REGISTRIES`, only when a step names them).

    So a comment, docstring or formatting change recomputes nothing, a change to the maths
    recomputes exactly the steps that run it, and tasks/flows (orchestration, logging) never
    invalidate results. ``root``: another copy of the nash_core package (tests).
    """
    return _code_version(modules, Path(root) if root else None)


@cache
def _code_version(modules: tuple[str, ...], root: Path | None) -> str:
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_file(name, root)
        if name in seen or path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if name not in REGISTRIES:
            todo += sorted(_imports(tree, root))
        seen[name] = ast.dump(_strip_docstrings(tree))
    blob = json.dumps(seen, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


code_version.cache_clear = _code_version.cache_clear  # type: ignore[attr-defined]


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


# --------------------------------------------------------------------------- verification
def _result_files(rdir: Path) -> list[Path]:
    """The files a result consists of: everything but the lock, the marker and hidden
    work directories (a training step's live checkpoint, temporary directories)."""
    return sorted(
        p
        for p in rdir.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(rdir).parts)
        and p.name != DONE
    )


def quarantine(rdir: Path, kind: str, reason: str) -> Path:
    """Move a result's contents (not its lock, which a waiting sweep may hold open) to
    ``<workdir>/damaged/<name>.<time>/`` and say so in one line; the directory is reused."""
    dest = rdir.parent.parent / DAMAGED / f"{rdir.name}.{time.strftime('%Y%m%dT%H%M%S')}"
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('~')[0]}~{n}")
    dest.mkdir(parents=True)
    for entry in rdir.iterdir():
        if entry.name != ".lock":
            shutil.move(str(entry), dest / entry.name)
    log.warning(
        "cached %s result %s is damaged (%s): moved to %s, recomputing",
        kind,
        rdir,
        reason,
        dest,
    )
    return dest


def _verified(rdir: Path, kind: str, done: dict) -> bool:
    """Whether a committed result still holds what its marker recorded (quarantined if not).

    A marker written before manifests were recorded has nothing to check against: trusted.
    """
    mode = os.environ.get(VERIFY_ENV, "sample")
    files = done.get("files")
    if files is None or mode == "off":
        return True
    reason = damage(rdir, files, mode)
    if reason is None:
        return True
    quarantine(rdir, kind, reason)
    return False


def _read_marker(rdir: Path, kind: str) -> dict | None:
    """The done-marker, or None: no marker (unfinished), or an unreadable one (quarantined)."""
    marker = rdir / DONE
    if not marker.is_file():
        return None
    try:
        return read_json(marker)
    except (ValueError, OSError) as exc:
        quarantine(rdir, kind, f"its done-marker is unreadable: {exc}")
        return None


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _disk_full(kind: str, rdir: Path, exc: BaseException) -> DiskFullError:
    """One line: which step, about how much it needed, what is free.

    What it needed is estimated by the step's last training checkpoint (the next one is the same
    size); a step without one needed at least what it had written.
    """
    ckpts = [_size(c) for c in rdir.rglob("checkpoint") if c.is_dir()]
    needed = max(ckpts) if ckpts else _size(rdir)
    free = shutil.disk_usage(rdir).free
    return DiskFullError(
        f"disk full in step {kind} ({rdir}): it needed about {needed / 1e6:.1f} MB more, "
        f"{free / 1e6:.1f} MB are free there. Free space and run the same command again: "
        f"finished steps are kept and training resumes from its last checkpoint"
    )


#: How a full disk shows when no OSError reaches us: safetensors (Rust) and torch.save
#: (PyTorch's zip writer reports the short write as a position mismatch).
_DISK_FULL_TEXT = ("No space left on device", "os error 28", "inline_container.cc", "write failed")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a write that failed for lack of space."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) == errno.ENOSPC:
            return True
        if any(t in str(exc) for t in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _compute(kind: str, rdir: Path, compute: Callable[[Path], dict[str, Any]]) -> dict:
    try:
        return compute(rdir)
    except DiskFullError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise _disk_full(kind, rdir, exc) from exc
        raise


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
        done = _read_marker(rdir, kind)
        if done is not None and _verified(rdir, kind, done):
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
        meta = _compute(kind, rdir, compute)
        seconds = round(time.perf_counter() - start, 3)
        try:
            atomic_write_json(
                marker,
                {
                    "kind": kind,
                    "key": key,
                    "meta": meta,
                    "seconds": seconds,
                    "resumed_from": resumed,
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "files": manifest(rdir, _result_files(rdir)),
                },
            )
        except OSError as exc:
            if is_disk_full(exc):
                raise _disk_full(kind, rdir, exc) from exc
            raise
    return StepResult(kind=kind, key=key, path=str(rdir), meta=meta, cached=False, seconds=seconds)
