"""What a directory of files holds, recorded and checked again later.

A record (:func:`manifest`) is ``{relative path: {size, sample, sha256}}``: the size, a sampled
hash (the whole file when it is under :data:`WHOLE_BELOW`, else :data:`SAMPLES` blocks of
:data:`BLOCK` bytes spread over it, first and last included) and the whole file's SHA-256.
:func:`damage` compares a directory with a record: in the default "sample" mode sizes and
sampled hashes (milliseconds for a t5-base model: a truncated, deleted or edited small file is
always found; an edit inside a large file only where a sampled block covers it), in "full" mode
whole-file SHA-256 (about a second per GB). Used for cached step results (tasks/cache.py) and
for models logged to MLflow (their manifest travels in the model's config).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

WHOLE_BELOW = 4 << 20
BLOCK, SAMPLES = 64 << 10, 16


def _sampled_hash(path: Path, size: int) -> str:
    """SHA-256 of the whole file when small, else of :data:`SAMPLES` spread-out blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= WHOLE_BELOW:
            return hashlib.file_digest(f, "sha256").hexdigest()
        for i in range(SAMPLES):
            f.seek((size - BLOCK) * i // (SAMPLES - 1))
            h.update(f.read(BLOCK))
    return h.hexdigest()


def _full_hash(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest(rdir: str | Path, files: Iterable[Path] | None = None) -> dict[str, dict]:
    """``{relative path: {size, sample, sha256}}`` of ``files`` (default: every file) under
    ``rdir``."""
    rdir = Path(rdir)
    out = {}
    for p in sorted(files if files is not None else (q for q in rdir.rglob("*") if q.is_file())):
        size = p.stat().st_size
        out[str(p.relative_to(rdir))] = {
            "size": size,
            "sample": _sampled_hash(p, size),
            "sha256": _full_hash(p),
        }
    return out


def damage(rdir: str | Path, files: dict[str, dict], mode: str = "sample") -> str | None:
    """What no longer matches the recorded ``files`` (first problem, in words), or None.

    ``mode`` "sample": sizes and sampled hashes (a truncated, deleted or edited small file is
    always found; an edit inside a large file only where a sampled block covers it);
    "full": whole-file SHA-256 of everything. Files added after the commit are ignored.
    """
    rdir = Path(rdir)
    for rel, rec in files.items():
        p = rdir / rel
        if not p.is_file():
            return f"{rel} is missing"
        size = p.stat().st_size
        if size != rec["size"]:
            return f"{rel} has {size} bytes, {rec['size']} were recorded"
        if mode == "full":
            if _full_hash(p) != rec["sha256"]:
                return f"{rel} changed (SHA-256 differs)"
        elif _sampled_hash(p, size) != rec["sample"]:
            return f"{rel} changed (content hash differs)"
    return None
