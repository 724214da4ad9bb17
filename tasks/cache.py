"""Content-addressed task results: ``<workdir>/runs/<kind>-<key>/`` plus a done-marker.

Why not Prefect's result cache: it needs persisted, picklable results and a cache policy
without the run id, its keys live in the Prefect server's database (the temporary server's
database is per PREFECT_HOME; a configured server is shared by other projects), and a cached
result is a pickle of a path that may no longer exist. Here the cache is the files themselves:

- the key hashes everything that determines a result -- content fingerprints of the base model
  and data, the task's config sections (``NashConfig.section_hash``), the keys of the upstream
  results, and :func:`code_version` -- so an unchanged step is found again by any run, on any
  Prefect server, and a changed input gets a new directory (old results stay, nothing is
  overwritten);
- a step writes into its directory and commits by writing ``_done.json`` atomically, last; a
  directory without the marker is unfinished, and re-running the step re-enters it, so the
  training loop's own checkpoints there let it resume instead of restarting;
- a per-directory file lock makes two sweeps on one workdir compute a step once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from nash_core.io import atomic_write_json, read_json

DONE = "_done.json"


class StepResult(BaseModel):
    """What a task hands downstream: where its result lives and a little metadata."""

    kind: str
    key: str
    path: str
    meta: dict[str, Any] = {}
    cached: bool = False
    seconds: float = 0.0


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the computing code (every file of the ``nash_core`` package).

    Tasks, flows and the CLI only orchestrate and log, so editing them does not invalidate
    trained results; any change to the maths does.
    """
    import nash_core

    root = Path(nash_core.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def cache_key(kind: str, **parts: Any) -> str:
    """Stable key of a step from the JSON of its determining parts and the code version."""
    blob = json.dumps({"kind": kind, "code": code_version(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_cached(workdir: str | Path, kind: str, key: str,
               compute: Callable[[Path], dict[str, Any]]) -> StepResult:
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
            return StepResult(kind=kind, key=key, path=str(rdir), meta=done["meta"], cached=True,
                              seconds=done["seconds"])
        start = time.perf_counter()
        meta = compute(rdir)
        seconds = round(time.perf_counter() - start, 3)
        atomic_write_json(marker, {"kind": kind, "key": key, "meta": meta, "seconds": seconds,
                                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return StepResult(kind=kind, key=key, path=str(rdir), meta=meta, cached=False, seconds=seconds)
