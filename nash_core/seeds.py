"""Quality over training seeds: per seed, aggregated, and paired comparisons.

A sweep with ``experiment.seeds`` trains every arm once per seed (same data, same teacher, a
different data order, dropout and mask noise). One seed's ROUGE-L says how good *that* model
is; the question a compression recipe must answer is how good the recipe is, and whether one
recipe beats another, when training is repeated. So:

- per seed: each model's mean ROUGE-L on the test examples (as evaluated);
- aggregated: the mean over seeds and its spread (sample standard deviation, min, max);
- the interval of a difference (candidate - teacher, or NASH - SFT at the same depth) is a
  **two-level paired bootstrap**: a resample draws seeds with replacement and test examples
  with replacement (the same examples for every seed and both models, so example difficulty
  cancels), and takes the mean difference over them. With seeds paired (NASH and SFT trained
  under the same seed see the same data order), the seed-to-seed spread of the difference
  widens the interval where a single seed would hide it.

Pure numpy over the ``per_example.jsonl`` files :func:`nash_core.evaluate.evaluate_model`
writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nash_core.errors import DataError


def scores(eval_dir: str | Path, metric: str = "rougeL") -> tuple[list[str], np.ndarray]:
    """The references and per-example ``metric`` of one evaluation directory."""
    path = Path(eval_dir) / "per_example.jsonl"
    try:
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the evaluation {path} ({exc})") from None
    return [r["reference"] for r in rows], np.asarray([r[metric] for r in rows], dtype=float)


def score_matrix(eval_dirs: Sequence[str | Path], metric: str = "rougeL") -> np.ndarray:
    """``[seeds, examples]`` scores of one candidate's evaluations, one per seed; refuses
    evaluations of different test examples."""
    refs, rows = None, []
    for d in eval_dirs:
        r, s = scores(d, metric)
        if refs is not None and r != refs:
            raise DataError(f"{d} scored other test examples than {eval_dirs[0]}")
        refs = r
        rows.append(s)
    if not rows or rows[0].size == 0:
        raise DataError("no evaluation (or no example) to aggregate over seeds")
    return np.vstack(rows)


def two_level_bootstrap(
    diffs: np.ndarray, n: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` (``[seeds, examples]``), resampling seeds
    and examples with replacement (each resample one seed draw and one example draw, the
    examples shared by every drawn seed). One seed: the paired example bootstrap."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"need a non-empty [seeds, examples] array (got shape {d.shape})")
    n_seeds, n_ex = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    chunk = max(1, 2_000_000 // (n_seeds * n_ex))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        s_idx = rng.integers(0, n_seeds, size=(m, n_seeds))
        e_idx = rng.integers(0, n_ex, size=(m, n_ex))
        # mean over drawn seeds of the mean over drawn examples
        per_seed = d[s_idx[:, :, None], e_idx[:, None, :]].mean(axis=2)
        means[start : start + m] = per_seed.mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def spread(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and count."""
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def vs_teacher(
    eval_dirs: Sequence[str | Path],
    teacher_eval_dir: str | Path,
    n: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """One candidate over seeds against the teacher: the metrics the sweep logs with a
    ``_seeds`` suffix (``rougeL_seeds`` = mean over seeds, ``rougeL_seeds_std``, ``_min``,
    ``_max``, ``seeds``; ``rougeL_retention_seeds``; ``rougeL_delta_seeds_ci_low`` / ``_high``,
    ``rougeL_retention_seeds_ci_low`` / ``_high``: the two-level interval)."""
    cand = score_matrix(eval_dirs)
    teacher = score_matrix([teacher_eval_dir])
    if cand.shape[1] != teacher.shape[1]:
        raise DataError(f"{teacher_eval_dir} scored another number of test examples")
    t_mean = float(teacher.mean())
    per_seed = cand.mean(axis=1)
    s = spread(per_seed)
    low, high = two_level_bootstrap(cand - teacher, n, confidence, seed)
    out = {
        "rougeL_seeds": s["mean"],
        "rougeL_seeds_std": s["std"],
        "rougeL_seeds_min": s["min"],
        "rougeL_seeds_max": s["max"],
        "seeds": float(s["n"]),
        "rougeL_delta_seeds": s["mean"] - t_mean,
        "rougeL_delta_seeds_ci_low": low,
        "rougeL_delta_seeds_ci_high": high,
    }
    if t_mean > 0:
        out["rougeL_retention_seeds"] = s["mean"] / t_mean
        out["rougeL_retention_seeds_ci_low"] = 1.0 + low / t_mean
        out["rougeL_retention_seeds_ci_high"] = 1.0 + high / t_mean
    return out


def paired_over_seeds(
    a_dirs: Sequence[str | Path],
    b_dirs: Sequence[str | Path],
    n: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """(a - b) ROUGE-L with seeds paired by position (a_dirs[i] and b_dirs[i] trained under the
    same seed) and examples paired: the mean over seeds, each seed's difference, and the
    two-level interval."""
    if len(a_dirs) != len(b_dirs):
        raise ValueError(f"pair seeds one to one (got {len(a_dirs)} and {len(b_dirs)})")
    a, b = score_matrix(a_dirs), score_matrix(b_dirs)
    if a.shape != b.shape:
        raise DataError(f"{a_dirs[0]} and {b_dirs[0]} scored other test examples")
    d = a - b
    low, high = two_level_bootstrap(d, n, confidence, seed)
    per_seed = d.mean(axis=1)
    return {
        "delta": float(per_seed.mean()),
        "ci_low": low,
        "ci_high": high,
        "per_seed": [float(x) for x in per_seed],
        "seeds_better": int((per_seed > 0).sum()),
        "seeds": int(per_seed.size),
    }
