"""Pick the sweep's champion from a table of candidates (one row per MLflow candidate run).

Pure pandas: the flow builds the table with ``mlflow.search_runs`` and hands it here, so the
policy can be tested and reasoned about without a tracking store.

Columns used (names as logged on the candidate runs):
``label``, ``method`` (``teacher`` marks the baseline), ``rougeL`` (the teacher's row gives the
scale), ``rougeL_retention``, ``rougeL_delta_ci_low``, the latency column of
:func:`latency_column` (shown, and the Pareto axis), the speedup interval columns of
:func:`speedup_columns` (``speedup_bs<N>``, ``_low``, ``_high``) and the tie-break columns.

The rule (docs/decisions.md), an intersection-union test as in clinical trials: a candidate
**qualifies** when it is non-inferior in quality AND superior in speed.

- Quality, as a fraction of the teacher's ROUGE-L: its retention (candidate / teacher ROUGE-L) is
  at least ``min_retention`` and the retention's lower confidence bound ``1 + ci_low / teacher``
  (ci_low: low end of the paired-bootstrap interval of candidate - teacher ROUGE-L) is at least
  ``min_retention_low``. With both at 0.95: "keeps 95% of the teacher's quality, and the test set
  cannot show it keeps less".
- Speed: the interval of its speedup over the teacher (paired by interleaved round,
  nash_core/intervals.py) lies above 1. A candidate without an interval is disqualified.

Among qualifiers one wins outright only if its speedup interval lies above every other
qualifier's; otherwise the candidates whose intervals overlap the fastest's are tied, and the tie
is broken by ``selection.tie_break`` (:data:`TIE_BREAKS`). No qualifier: the teacher stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from nash_core.config import SelectionConfig
from nash_core.intervals import Interval, interval_from_columns, speed_ranking

TEACHER = "teacher"


def latency_column(sel: SelectionConfig) -> str:
    """Metric shown next to the speedup: the configured latency at the configured batch size.

    Every latency is logged once per benchmarked batch size with a ``_bs<N>`` suffix, so the
    ranking never silently mixes batch sizes.
    """
    return f"{sel.latency_metric}_bs{sel.batch_size}"


def speedup_columns(sel: SelectionConfig) -> tuple[str, str, str]:
    """The speedup over the teacher at the selection's batch size: point, interval low, high."""
    point = f"speedup_bs{sel.batch_size}"
    return point, f"{point}_low", f"{point}_high"


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
    """The champion and why; ``rejected`` explains every candidate that did not win.

    ``tied``: the candidates tied on speed with the champion (the champion first), empty when
    it won outright or the teacher stays; ``chosen_by``: the tie-break key that decided.
    ``intervals``: every candidate's speedup interval (point, low, high), None where missing.
    """

    label: str
    run_id: str | None
    is_teacher: bool
    reason: str
    qualified: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    tied: list[str] = field(default_factory=list)
    chosen_by: str | None = None
    intervals: dict[str, tuple[float, float, float] | None] = field(default_factory=dict)

    def as_text(self) -> str:
        lines = [
            f"champion: {self.label}" + (f" (run {self.run_id})" if self.run_id else ""),
            f"reason: {self.reason}",
            f"qualified: {', '.join(self.qualified) if self.qualified else 'none'}",
        ]
        if self.tied:
            lines.append(f"tied on speed: {', '.join(self.tied)} (chosen by {self.chosen_by})")
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


def _num(row, col: str) -> float:
    v = pd.to_numeric(row.get(col), errors="coerce")
    return float(v) if pd.notna(v) else math.nan


# --------------------------------------------------------------------------- tie-break keys
@dataclass(frozen=True)
class TieBreak:
    """A declared tie-break key: how to read it from a row, and whether higher is better."""

    value: Callable[[pd.Series, float], float]  # (row, teacher ROUGE-L) -> value
    higher_is_better: bool
    what: str


def _params(row, _t) -> float:
    return _num(row, "params_total")


#: What each ``selection.tie_break`` key means (its names: ``nash_core.config.TIE_BREAK_KEYS``,
#: which config validation checks against; tests/test_selection_rule.py keeps the two equal).
TIE_BREAKS: dict[str, TieBreak] = {
    "retention_low": TieBreak(
        lambda row, t: _retention_low(row, t),
        True,
        "higher retention lower bound",
    ),
    "rougeL": TieBreak(lambda row, _t: _num(row, "rougeL"), True, "higher ROUGE-L"),
    "params": TieBreak(_params, False, "fewer parameters"),
    "params_nonzero": TieBreak(
        lambda row, _t: _num(row, "params_nonzero"), False, "fewer non-zero parameters"
    ),
    "served_mb": TieBreak(lambda row, _t: _num(row, "weights_mb"), False, "smaller served size"),
    "speedup": TieBreak(lambda row, _t: _num(row, "_speedup_point"), True, "higher speedup"),
}


def break_tie(rows: list[pd.Series], keys: list[str], teacher_q: float) -> tuple[pd.Series, str]:
    """The row the declared keys prefer, and the text saying which key decided.

    Keys are applied in order, each keeping the rows with its best value (a missing value is
    never best); the first key that leaves one row decides. If every key leaves several, the
    label (alphabetical) settles it, so the choice never depends on the table's order.
    """
    remaining = list(rows)
    for key in keys:
        tb = TIE_BREAKS[key]
        vals = [tb.value(r, teacher_q) for r in remaining]
        known = [v for v in vals if not math.isnan(v)]
        if not known:
            continue
        best = max(known) if tb.higher_is_better else min(known)
        kept = [r for r, v in zip(remaining, vals) if v == best]
        if len(kept) < len(remaining):
            shown = ", ".join(f"{r['label']} {_fmt(v)}" for r, v in zip(remaining, vals))
            if len(kept) == 1:
                return kept[0], f"{key} ({tb.what}: {shown})"
            remaining = kept
    winner = min(remaining, key=lambda r: str(r["label"]))
    return winner, f"label (equal on {', '.join(keys) or 'no key'}; alphabetical)"


# --------------------------------------------------------------------------- the two halves
#: The quality columns of the served model, and of the recipe over experiment.seeds (present
#: only in a sweep with several seeds): (what, retention column, delta CI low column).
QUALITY_CHECKS = (
    ("", "rougeL_retention", "rougeL_delta_ci_low"),
    (" over seeds", "rougeL_retention_seeds", "rougeL_delta_seeds_ci_low"),
)


def _has(row, col: str) -> bool:
    return not math.isnan(_num(row, col))


def quality_reasons(row, t_quality: float, sel: SelectionConfig) -> list[str]:
    """Why ``row`` is not non-inferior in quality (empty when it is).

    The served model's own evaluation must pass; in a sweep with several seeds its aggregate
    over seeds (the recipe, trained again) must pass too."""
    why = []
    for what, ret_col, low_col in QUALITY_CHECKS:
        if what and not _has(row, ret_col):
            continue
        ret, low = _num(row, ret_col), _num(row, low_col)
        if not ret >= sel.min_retention:  # NaN fails too
            why.append(f"{ret_col} {_fmt(ret)} < {sel.min_retention}")
        ret_low = retention_low(low, t_quality)
        if not ret_low >= sel.min_retention_low:
            why.append(
                f"retention lower bound{what} {_fmt(ret_low)} < {sel.min_retention_low} "
                f"({low_col} {_fmt(low)} on a teacher at {_fmt(t_quality)})"
            )
    return why


def _retention_low(row, t_quality: float) -> float:
    """The retention lower bound a tie is broken by: the served model's, or the lower of it
    and the aggregate's over seeds."""
    lows = [
        retention_low(row.get(low_col), t_quality)
        for what, ret_col, low_col in QUALITY_CHECKS
        if not what or _has(row, ret_col)
    ]
    return min(lows) if not any(math.isnan(x) for x in lows) else math.nan


def speed_interval(row, sel: SelectionConfig) -> Interval | None:
    point, low, high = speedup_columns(sel)
    return interval_from_columns(row.get(point), row.get(low), row.get(high))


def speed_reason(iv: Interval | None, sel: SelectionConfig, threshold: float = 1.0) -> str | None:
    """Why a speedup interval is not superior (None when it lies above ``threshold``)."""
    point, low, high = speedup_columns(sel)
    if iv is None:
        return f"speedup interval missing ({low} / {high} not logged): speed cannot be judged"
    if not iv.low > threshold:
        return f"not superior in speed: {point} {iv.text()} does not lie above {threshold:.4g}"
    return None


# --------------------------------------------------------------------------- the rule
def _check_columns(df: pd.DataFrame, sel: SelectionConfig) -> None:
    for col in ("label", "method", "rougeL", "rougeL_retention", "rougeL_delta_ci_low"):
        if col not in df.columns:
            raise KeyError(
                f"selection needs column '{col}' in the candidate table (have {sorted(df.columns)})"
            )
    lat = latency_column(sel)
    if lat not in df.columns:
        raise KeyError(
            f"selection needs column '{lat}' in the candidate table (have {sorted(df.columns)})"
        )


def _rule_text(sel: SelectionConfig, threshold: float) -> str:
    point, _, _ = speedup_columns(sel)
    return (
        f"rougeL_retention >= {sel.min_retention} and its lower confidence bound "
        f">= {sel.min_retention_low}, {point} interval above {threshold:.4g}"
    )


def _teacher_decision(teacher, reason, names, rejected, intervals) -> Decision:
    return Decision(
        teacher["label"], teacher.get("run_id"), True, reason, names, rejected, [], None, intervals
    )


def _screen(df, t_quality, sel, speed_threshold, check_quality):
    """Both halves of the rule on every candidate: (qualifying rows by label, every speedup
    interval by label, why each of the others is rejected)."""
    rejected: dict[str, str] = {}
    rows: dict[str, pd.Series] = {}
    ivs: dict[str, Interval | None] = {}
    for _, row in df[df["method"] != TEACHER].iterrows():
        iv = speed_interval(row, sel)
        ivs[row["label"]] = iv
        why = quality_reasons(row, t_quality, sel) if check_quality else []
        slow = speed_reason(iv, sel, speed_threshold)
        if slow:
            why.append(slow)
        if why:
            rejected[row["label"]] = "; ".join(why)
        else:
            rows[row["label"]] = row.copy()
            rows[row["label"]]["_speedup_point"] = iv.point
    return rows, ivs, rejected


def choose_champion(
    df: pd.DataFrame,
    sel: SelectionConfig,
    *,
    speed_threshold: float = 1.0,
    check_quality: bool = True,
) -> Decision:
    """The rule of the module docstring; missing metrics disqualify (never a silent pass).

    ``speed_threshold``: what the speedup interval must lie above (1.0: faster than the teacher;
    the promotion gate passes its tolerance). ``check_quality`` False skips the quality half
    (the gate against a champion with no quality to lose).
    """
    _check_columns(df, sel)
    teachers = df[df["method"] == TEACHER]
    if teachers.empty:
        raise ValueError("selection needs the teacher's row (method 'teacher') as the baseline")
    teacher = teachers.iloc[0]
    t_quality = _num(teacher, "rougeL")
    point_col = speedup_columns(sel)[0]

    rows, ivs, rejected = _screen(df, t_quality, sel, speed_threshold, check_quality)
    intervals = {k: (v.point, v.low, v.high) if v else None for k, v in ivs.items()}
    names = list(rows)
    rule = _rule_text(sel, speed_threshold)
    if not rows:
        reason = f"no candidate qualifies ({rule}); keeping the teacher"
        return _teacher_decision(teacher, reason, names, rejected, intervals)

    ranking = speed_ranking({k: ivs[k] for k in rows}, speed_threshold)
    fastest = ivs[ranking.fastest]
    for name in ranking.superior:
        if name not in ranking.tied:
            rejected[name] = (
                f"qualifies but slower: {point_col} {ivs[name].text()} lies below "
                f"{ranking.fastest}'s {fastest.text()}"
            )
    if len(ranking.tied) == 1:
        best, chosen_by = rows[ranking.fastest], None
        others = [n for n in ranking.superior if n != ranking.fastest]
        speed = (
            f"its {point_col} {fastest.text()} lies above every other qualifier's"
            if others
            else f"the only qualifier, {point_col} {fastest.text()}"
        )
    else:
        best, chosen_by = break_tie([rows[n] for n in ranking.tied], sel.tie_break, t_quality)
        tied_text = ", ".join(f"{n} {ivs[n].text()}" for n in ranking.tied)
        speed = (
            f"tied on speed with {', '.join(n for n in ranking.tied if n != best['label'])} "
            f"(intervals {point_col}: {tied_text}), chosen by {chosen_by}"
        )
        for n in ranking.tied:
            if n != best["label"]:
                rejected[n] = f"tied on speed with {best['label']}, lost on {chosen_by}"
    label = best["label"]
    tied = [label, *(n for n in ranking.tied if n != label)] if chosen_by else []
    reason = (
        f"{label}: {speed} ({rule}); {latency_column(sel)} {_fmt(_num(best, latency_column(sel)))} "
        f"ms, rougeL_retention {_fmt(_num(best, 'rougeL_retention'))} (lower bound "
        f"{_fmt(retention_low(best['rougeL_delta_ci_low'], t_quality))})"
    )
    return Decision(
        label, best.get("run_id"), False, reason, names, rejected, tied, chosen_by, intervals
    )
