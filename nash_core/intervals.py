"""Latency with uncertainty: bootstrap intervals over interleaved rounds, and who is tied.

Pure numpy. The benchmark times every model once per round, interleaved (method.md section 6),
so round ``r`` of the teacher and round ``r`` of a candidate ran on the same input at nearly the
same moment. A candidate's **speedup** is therefore measured per round, as the ratio of the two
times in that round (teacher / candidate), and summarised by the median of those ratios; its
interval comes from resampling the rounds with replacement (percentile bootstrap, seeded), so
a noisy round moves both numerators and denominators together instead of widening the interval
twice. The **median latency** gets the same bootstrap over its own rounds.

:func:`speed_ranking` is the speed half of the selection rule (nash_core/selection.py): among
candidates whose speedup interval lies above a threshold, the fastest by its point value, and
the ones tied with it (intervals overlapping the fastest's). The benchmark uses the same
function to decide which candidates deserve extra rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Fewer rounds than this give no interval (a single round has no spread to resample).
MIN_ROUNDS = 2


@dataclass(frozen=True)
class Interval:
    """A point value with its ``confidence`` interval ``[low, high]`` from ``n`` rounds."""

    point: float
    low: float
    high: float
    n: int

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def above(self, other: Interval) -> bool:
        """This interval lies entirely above ``other`` (the two are separated)."""
        return self.low > other.high

    def text(self, digits: int = 3) -> str:
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def as_dict(self) -> dict:
        return {"point": self.point, "low": self.low, "high": self.high, "n": self.n}


def _bootstrap_median(
    values: np.ndarray, samples: int, confidence: float, seed: int
) -> Interval | None:
    n = int(values.size)
    if n < MIN_ROUNDS or not np.all(np.isfinite(values)):
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    medians = np.median(values[idx], axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return Interval(float(np.median(values)), float(low), float(high), n)


def median_interval(
    seconds: Sequence[float], samples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval | None:
    """The median latency in ms and its bootstrap interval over rounds (None under 2 rounds)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return _bootstrap_median(ms, samples, confidence, seed)


def paired_speedup(
    baseline_s: Sequence[float],
    candidate_s: Sequence[float],
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval | None:
    """Speedup over the baseline paired by round: the median of per-round ratios
    ``baseline[r] / candidate[r]`` and its bootstrap interval over rounds.

    The two lists are aligned by round from the start; when one has more rounds (extra rounds
    timed only some models), the rounds both ran are used. None under 2 common rounds or when a
    time is not positive.
    """
    n = min(len(baseline_s), len(candidate_s))
    base = np.asarray(baseline_s[:n], dtype=np.float64)
    cand = np.asarray(candidate_s[:n], dtype=np.float64)
    if n and (np.any(base <= 0) or np.any(cand <= 0)):
        return None
    return _bootstrap_median(base / cand if n else base, samples, confidence, seed)


@dataclass(frozen=True)
class SpeedRanking:
    """``fastest`` among the candidates superior in speed, and ``tied`` (the fastest first,
    then every candidate whose interval overlaps the fastest's); empty when none is superior."""

    fastest: str | None
    tied: list[str]
    superior: list[str]


def speed_ranking(intervals: Mapping[str, Interval | None], threshold: float = 1.0) -> SpeedRanking:
    """The speed half of the selection rule.

    Superior: the speedup interval lies above ``threshold`` (``low > threshold``; 1.0: faster
    than the baseline beyond the noise). The fastest superior candidate is the one with the
    highest point speedup (name breaks an exact tie, so the answer never depends on order); it
    wins on speed outright only when its interval lies above every other superior candidate's,
    otherwise the candidates whose intervals overlap it are tied with it.
    """
    superior = sorted(
        (name for name, iv in intervals.items() if iv is not None and iv.low > threshold),
        key=lambda name: (-intervals[name].point, name),
    )
    if not superior:
        return SpeedRanking(None, [], [])
    best = intervals[superior[0]]
    tied = [name for name in superior if intervals[name].overlaps(best)]
    return SpeedRanking(superior[0], tied, superior)


def interval_from_columns(point, low, high, n: int = 0) -> Interval | None:
    """An :class:`Interval` from table cells; None when low or high is missing."""
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        return None
    if math.isnan(lo) or math.isnan(hi):
        return None
    try:
        p = float(point)
    except (TypeError, ValueError):
        p = math.nan
    return Interval(p if not math.isnan(p) else (lo + hi) / 2.0, lo, hi, n)
