"""Pick the sweep's champion from a table of candidates (one row per MLflow candidate run).

Pure pandas: the flow builds the table with ``mlflow.search_runs`` and hands it here, so the
policy can be tested and reasoned about without a tracking store.

Columns used (names as logged on the candidate runs):
``label``, ``method`` (``teacher`` marks the baseline), ``rougeL_retention``,
``rougeL_delta_ci_low`` and the latency column of :func:`latency_column`.
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
        lines = [f"champion: {self.label}" + (f" (run {self.run_id})" if self.run_id else ""),
                 f"reason: {self.reason}",
                 f"qualified: {', '.join(self.qualified) if self.qualified else 'none'}"]
        lines += [f"rejected {name}: {why}" for name, why in self.rejected.items()]
        return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return "missing" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def choose_champion(df: pd.DataFrame, sel: SelectionConfig) -> Decision:
    """The fastest candidate that keeps quality, else the teacher.

    A candidate qualifies when ``rougeL_retention >= min_retention`` and the low end of the
    bootstrap CI of (candidate - teacher) ROUGE-L is ``>= -max_drop``; the fastest qualifier by
    :func:`latency_column` wins, unless it is not faster than the teacher (then compressing buys
    nothing and the teacher stays). Missing metrics disqualify (never a silent pass).
    """
    lat = latency_column(sel)
    for col in ("label", "method", "rougeL_retention", "rougeL_delta_ci_low", lat):
        if col not in df.columns:
            raise KeyError(f"selection needs column '{col}' in the candidate table "
                           f"(have {sorted(df.columns)})")
    teachers = df[df["method"] == TEACHER]
    if teachers.empty:
        raise ValueError("selection needs the teacher's row (method 'teacher') as the baseline")
    teacher = teachers.iloc[0]
    t_lat = float(teacher[lat]) if pd.notna(teacher[lat]) else math.inf

    rejected: dict[str, str] = {}
    qualified = []
    for _, row in df[df["method"] != TEACHER].iterrows():
        ret, low, ms = (pd.to_numeric(row[c], errors="coerce")
                        for c in ("rougeL_retention", "rougeL_delta_ci_low", lat))
        why = []
        if not ret >= sel.min_retention:  # NaN fails too
            why.append(f"rougeL_retention {_fmt(ret)} < {sel.min_retention}")
        if not low >= -sel.max_drop:
            why.append(f"rougeL_delta_ci_low {_fmt(low)} < -{sel.max_drop}")
        if pd.isna(ms):
            why.append(f"{lat} missing")
        if why:
            rejected[row["label"]] = "; ".join(why)
        else:
            qualified.append(row)

    rule = (f"rougeL_retention >= {sel.min_retention} and rougeL_delta_ci_low >= "
            f"-{sel.max_drop}, ranked by {lat}")
    names = [r["label"] for r in qualified]
    if not qualified:
        return Decision(teacher["label"], teacher.get("run_id"), True,
                        f"no candidate qualifies ({rule}); keeping the teacher", names, rejected)
    best = min(qualified, key=lambda r: float(r[lat]))
    for r in qualified:
        if r is not best:
            rejected[r["label"]] = f"qualifies but slower ({_fmt(float(r[lat]))} ms vs " \
                                   f"{_fmt(float(best[lat]))} ms)"
    if not float(best[lat]) < t_lat:
        rejected[best["label"]] = (f"fastest qualifier but not faster than the teacher "
                                   f"({_fmt(float(best[lat]))} vs {_fmt(t_lat)} ms)")
        return Decision(teacher["label"], teacher.get("run_id"), True,
                        f"no qualifying candidate is faster than the teacher ({rule})",
                        names, rejected)
    speedup = t_lat / float(best[lat])
    reason = (f"fastest of {len(qualified)} qualifying candidate(s) ({rule}): "
              f"{lat} {_fmt(float(best[lat]))} vs teacher {_fmt(t_lat)} ({speedup:.2f}x), "
              f"rougeL_retention {_fmt(float(best['rougeL_retention']))}, "
              f"rougeL_delta_ci_low {_fmt(float(best['rougeL_delta_ci_low']))}")
    return Decision(best["label"], best.get("run_id"), False, reason, names, rejected)
