"""Pick the sweep's champion from a table of candidates (one row per MLflow candidate run).

Pure pandas: the flow builds the table with ``mlflow.search_runs`` and hands it here, so the
policy can be tested and reasoned about without a tracking store.

Columns used (names as logged on the candidate runs):
``label``, ``method`` (``teacher`` marks the baseline), ``rougeL`` (the teacher's row gives the
scale), ``rougeL_retention``, ``rougeL_delta_ci_low`` and the latency column of
:func:`latency_column`.

The policy speaks one language: quality as a fraction of the teacher's ROUGE-L. A candidate
qualifies when its retention (candidate / teacher ROUGE-L) is at least ``min_retention`` AND the
low end of the paired-bootstrap interval of (candidate - teacher) ROUGE-L, divided by the
teacher's ROUGE-L, is at least ``min_retention_low - 1``; i.e. the retention's lower confidence
bound ``1 + ci_low / teacher`` is at least ``min_retention_low``. With both at 0.95 this reads
"keeps 95% of the teacher's quality, and the test set cannot show it keeps less".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from nash_core.config import SelectionConfig

TEACHER = "teacher"


def latency_column(sel: SelectionConfig) -> str:
    """Metric that ranks candidates: the configured latency at the configured batch size.

    Every latency is logged once per benchmarked batch size with a ``_bs<N>`` suffix, so the
    ranking never silently mixes batch sizes.
    """
    return f"{sel.latency_metric}_bs{sel.batch_size}"


def pareto_frontier(df: pd.DataFrame, quality: str, latency: str) -> pd.Series:
    """Boolean mask of the rows no other row dominates (higher-or-equal quality AND
    lower-or-equal latency, strictly better in one). Rows with a missing value are never on it.
    """
    q = pd.to_numeric(df[quality], errors="coerce")
    t = pd.to_numeric(df[latency], errors="coerce")
    valid = q.notna() & t.notna()
    on = pd.Series(False, index=df.index)
    for i in df.index[valid]:
        others = valid & (df.index != i)
        dominated = others & (q >= q[i]) & (t <= t[i]) & ((q > q[i]) | (t < t[i]))
        on[i] = not dominated.any()
    return on


@dataclass
class Decision:
    """The champion and why; ``rejected`` explains every candidate that did not win."""

    label: str
    run_id: str | None
    is_teacher: bool
    reason: str
    qualified: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)

    def as_text(self) -> str:
        lines = [
            f"champion: {self.label}" + (f" (run {self.run_id})" if self.run_id else ""),
            f"reason: {self.reason}",
            f"qualified: {', '.join(self.qualified) if self.qualified else 'none'}",
        ]
        lines += [f"rejected {name}: {why}" for name, why in self.rejected.items()]
        return "\n".join(lines) + "\n"


def retention_low(delta_ci_low: float, teacher_rougeL: float) -> float:
    """Lower confidence bound of retention: ``1 + ci_low(candidate - teacher) / teacher``
    (NaN when the teacher scores 0 or a value is missing)."""
    try:
        low, t = float(delta_ci_low), float(teacher_rougeL)
    except (TypeError, ValueError):
        return math.nan
    return 1.0 + low / t if t > 0 and not math.isnan(low) else math.nan


def _fmt(x: float) -> str:
    return "missing" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


# C901: one guarded decision table (missing metrics, retention, bound, speed, teacher fallback),
# each branch a documented rule; split up it reads worse.
def choose_champion(df: pd.DataFrame, sel: SelectionConfig) -> Decision:  # noqa: C901
    """The fastest candidate that keeps quality, else the teacher.

    A candidate qualifies when ``rougeL_retention >= min_retention`` and the lower confidence
    bound of its retention (:func:`retention_low`) is ``>= min_retention_low``; the fastest
    qualifier by :func:`latency_column` wins, unless it is not faster than the teacher (then
    compressing buys nothing and the teacher stays). Missing metrics disqualify (never a silent
    pass).
    """
    lat = latency_column(sel)
    for col in ("label", "method", "rougeL", "rougeL_retention", "rougeL_delta_ci_low", lat):
        if col not in df.columns:
            raise KeyError(
                f"selection needs column '{col}' in the candidate table (have {sorted(df.columns)})"
            )
    teachers = df[df["method"] == TEACHER]
    if teachers.empty:
        raise ValueError("selection needs the teacher's row (method 'teacher') as the baseline")
    teacher = teachers.iloc[0]
    t_lat = float(teacher[lat]) if pd.notna(teacher[lat]) else math.inf
    t_quality = pd.to_numeric(teacher["rougeL"], errors="coerce")

    rejected: dict[str, str] = {}
    qualified = []
    for _, row in df[df["method"] != TEACHER].iterrows():
        ret, low, ms = (
            pd.to_numeric(row[c], errors="coerce")
            for c in ("rougeL_retention", "rougeL_delta_ci_low", lat)
        )
        why = []
        if not ret >= sel.min_retention:  # NaN fails too
            why.append(f"rougeL_retention {_fmt(ret)} < {sel.min_retention}")
        ret_low = retention_low(low, t_quality)
        if not ret_low >= sel.min_retention_low:
            why.append(
                f"retention lower bound {_fmt(ret_low)} < {sel.min_retention_low} "
                f"(rougeL_delta_ci_low {_fmt(low)} on a teacher at {_fmt(t_quality)})"
            )
        if pd.isna(ms):
            why.append(f"{lat} missing")
        if why:
            rejected[row["label"]] = "; ".join(why)
        else:
            qualified.append(row)

    rule = (
        f"rougeL_retention >= {sel.min_retention} and its lower confidence bound "
        f">= {sel.min_retention_low}, ranked by {lat}"
    )
    names = [r["label"] for r in qualified]
    if not qualified:
        return Decision(
            teacher["label"],
            teacher.get("run_id"),
            True,
            f"no candidate qualifies ({rule}); keeping the teacher",
            names,
            rejected,
        )
    best = min(qualified, key=lambda r: float(r[lat]))
    for r in qualified:
        if r is not best:
            rejected[r["label"]] = (
                f"qualifies but slower ({_fmt(float(r[lat]))} ms vs {_fmt(float(best[lat]))} ms)"
            )
    if not float(best[lat]) < t_lat:
        rejected[best["label"]] = (
            f"fastest qualifier but not faster than the teacher "
            f"({_fmt(float(best[lat]))} vs {_fmt(t_lat)} ms)"
        )
        return Decision(
            teacher["label"],
            teacher.get("run_id"),
            True,
            f"no qualifying candidate is faster than the teacher ({rule})",
            names,
            rejected,
        )
    speedup = t_lat / float(best[lat])
    reason = (
        f"fastest of {len(qualified)} qualifying candidate(s) ({rule}): "
        f"{lat} {_fmt(float(best[lat]))} vs teacher {_fmt(t_lat)} ({speedup:.2f}x), "
        f"rougeL_retention {_fmt(float(best['rougeL_retention']))} (lower bound "
        f"{_fmt(retention_low(best['rougeL_delta_ci_low'], t_quality))}), "
        f"rougeL_delta_ci_low {_fmt(float(best['rougeL_delta_ci_low']))}"
    )
    return Decision(best["label"], best.get("run_id"), False, reason, names, rejected)
