"""What does verifying a cached result cost at the t5-base shape?

Writes one result directory as the sweep's fine-tune step leaves it for t5-base: a
``model.safetensors`` of t5-base's size (222.9M fp32 parameters, random values; default
~892 MB) with a config.json and tokenizer files, then times, on warm and on cold page cache
(the file's pages dropped with ``posix_fadvise(DONTNEED)``):

- commit: :func:`nash_core.integrity.manifest` (sizes, sampled hashes, whole-file SHA-256),
  once per computed step;
- reuse: :func:`nash_core.integrity.damage` in the default mode (sizes + sampled hashes), on
  every hit;
- reuse with ``NASH_VERIFY_CACHE=full`` (whole-file SHA-256 again).

    .venv/bin/python benchmarks/cache_verify.py --dir /tmp/cacheverify [--mb 892] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nash_core.integrity import damage, manifest  # noqa: E402

T5_BASE_PARAMS = 222_903_552


def _write(rdir: Path, mb: int) -> None:
    rdir.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(1 << 20)
    with open(rdir / "model.safetensors", "wb") as f:
        for i in range(mb):
            f.write(chunk[i % 7 :] + chunk[: i % 7])  # distinct blocks, cheap to make
    (rdir / "config.json").write_text(json.dumps({"d_model": 768, "num_layers": 12}))
    (rdir / "tokenizer.json").write_bytes(os.urandom(2 << 20))
    (rdir / "generation_config.json").write_text("{}")


def _drop(rdir: Path) -> None:
    for p in rdir.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/nash-cache-verify")
    p.add_argument("--mb", type=int, default=T5_BASE_PARAMS * 4 // (1 << 20))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args(argv)
    rdir = Path(a.dir) / "finetune-standin"
    _write(rdir, a.mb)
    os.sync()
    files = manifest(rdir)
    res = {"model_mb": a.mb, "cpu": platform.processor() or platform.machine()}
    res["commit_warm_s"] = _time(lambda: manifest(rdir), a.repeats)
    res["reuse_sampled_warm_s"] = _time(lambda: damage(rdir, files), a.repeats)
    res["reuse_full_warm_s"] = _time(lambda: damage(rdir, files, "full"), a.repeats)
    cold = []
    for mode in ("sample", "full"):
        _drop(rdir)
        t = time.perf_counter()
        assert damage(rdir, files, mode) is None
        cold.append(time.perf_counter() - t)
    res["reuse_sampled_cold_s"], res["reuse_full_cold_s"] = cold
    for k, v in res.items():
        print(f"{k:24s} {v:.4f}" if isinstance(v, float) else f"{k:24s} {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(rdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
