"""The selection rule on constructed candidate tables: non-inferior in quality AND superior in
speed (the speedup interval over the teacher lies above 1); an outright winner only when its
interval lies above every other qualifier's; ties broken by the declared order."""

import math

import pandas as pd
import pytest

from nash_core.config import ConfigError, SelectionConfig, validate_config
from nash_core.intervals import Interval, paired_speedup, speed_ranking
from nash_core.selection import choose_champion

COLS = [
    "label",
    "method",
    "rougeL",
    "rougeL_retention",
    "rougeL_delta_ci_low",
    "speedup_bs1",
    "speedup_bs1_low",
    "speedup_bs1_high",
    "params_total",
    "weights_mb",
]
# teacher ROUGE-L 0.80; its own speedup is 1 by definition
TEACHER = ("teacher", "teacher", 0.80, 1.0, 0.0, 1.0, 1.0, 1.0, 60e6, 240.0)


def table(*rows):
    df = pd.DataFrame([dict(zip(COLS, r)) for r in (TEACHER, *rows)])
    df["run_id"] = "run-" + df["label"]
    df["latency_p50_ms_bs1"] = 100.0 / df["speedup_bs1"]
    return df


SEL = SelectionConfig(min_retention=0.95, min_retention_low=0.95)


def test_clear_winner_its_interval_lies_above_every_other_qualifiers():
    d = choose_champion(
        table(
            ("fast", "nash", 0.79, 0.9875, -0.02, 2.0, 1.9, 2.1, 20e6, 80.0),
            ("mid", "sft", 0.80, 1.0, -0.01, 1.5, 1.4, 1.6, 30e6, 120.0),
            ("bad", "cofi", 0.60, 0.75, -0.25, 3.0, 2.9, 3.1, 10e6, 40.0),
        ),
        SEL,
    )
    assert (d.label, d.run_id, d.is_teacher) == ("fast", "run-fast", False)
    assert d.tied == [] and d.chosen_by is None
    assert "lies above every other qualifier's" in d.reason and "[1.900, 2.100]" in d.reason
    assert d.qualified == ["fast", "mid"]
    assert "qualifies but slower" in d.rejected["mid"] and "[1.400, 1.600]" in d.rejected["mid"]
    assert "rougeL_retention 0.75 < 0.95" in d.rejected["bad"]


def test_tie_broken_by_retention_lower_bound():
    # overlapping intervals; a is faster on the point value but b keeps more quality for sure
    d = choose_champion(
        table(
            ("a", "nash", 0.78, 0.975, -0.03, 1.42, 1.30, 1.55, 20e6, 80.0),
            ("b", "sft", 0.79, 0.9875, -0.01, 1.40, 1.28, 1.50, 30e6, 120.0),
        ),
        SEL,
    )
    assert d.label == "b" and d.tied == ["b", "a"]
    assert d.chosen_by.startswith("retention_low")
    assert "tied on speed with a (intervals speedup_bs1: a 1.420 [1.300, 1.550], b 1.400" in (
        d.reason
    )
    assert "chosen by retention_low" in d.reason
    assert "tied on speed with b, lost on retention_low" in d.rejected["a"]
    assert "tied on speed: b, a (chosen by retention_low" in d.as_text()


def test_tie_broken_by_params_when_retention_is_equal():
    d = choose_champion(
        table(
            ("a", "nash", 0.79, 0.9875, -0.01, 1.42, 1.30, 1.55, 30e6, 80.0),
            ("b", "sft", 0.79, 0.9875, -0.01, 1.40, 1.28, 1.50, 20e6, 120.0),
            ("c", "cofi", 0.80, 1.0, 0.0, 1.10, 1.02, 1.20, 10e6, 40.0),  # separate: slower
        ),
        SEL,
    )
    assert d.label == "b" and d.chosen_by.startswith("params") and d.tied == ["b", "a"]
    assert "c" in d.rejected and "slower" in d.rejected["c"]
    # the declared order is configurable: served size first picks a
    d2 = choose_champion(
        table(
            ("a", "nash", 0.79, 0.9875, -0.01, 1.42, 1.30, 1.55, 30e6, 80.0),
            ("b", "sft", 0.79, 0.9875, -0.01, 1.40, 1.28, 1.50, 20e6, 120.0),
        ),
        SelectionConfig(tie_break=["served_mb", "params"]),
    )
    assert d2.label == "a" and d2.chosen_by.startswith("served_mb")


def test_no_candidate_superior_to_the_teacher_keeps_the_teacher():
    d = choose_champion(
        table(
            ("same", "nash", 0.80, 1.0, 0.0, 1.02, 0.97, 1.08, 20e6, 80.0),
            ("slower", "sft", 0.80, 1.0, 0.0, 0.90, 0.85, 0.95, 30e6, 120.0),
        ),
        SEL,
    )
    assert d.is_teacher and d.label == "teacher" and d.run_id == "run-teacher"
    assert "no candidate qualifies" in d.reason and d.qualified == []
    assert "not superior in speed" in d.rejected["same"] and "[0.970, 1.080]" in d.rejected["same"]
    assert "does not lie above 1" in d.rejected["slower"]


def test_missing_interval_disqualifies_with_the_reason():
    d = choose_champion(
        table(
            ("no-iv", "nash", 0.80, 1.0, 0.0, 3.0, math.nan, math.nan, 20e6, 80.0),
            ("ok", "sft", 0.80, 1.0, 0.0, 1.3, 1.2, 1.4, 30e6, 120.0),
        ),
        SEL,
    )
    assert d.label == "ok"
    assert "speedup interval missing (speedup_bs1_low / speedup_bs1_high" in d.rejected["no-iv"]
    assert d.intervals["no-iv"] is None
    # no interval columns at all (a table logged before intervals existed): nobody qualifies
    old = table(("x", "nash", 0.80, 1.0, 0.0, 3.0, 2.0, 4.0, 1e6, 1.0)).drop(
        columns=["speedup_bs1_low", "speedup_bs1_high"]
    )
    d = choose_champion(old, SEL)
    assert d.is_teacher and "speedup interval missing" in d.rejected["x"]


def test_speed_ranking_and_paired_speedup():
    ivs = {"a": Interval(2.0, 1.8, 2.2, 9), "b": Interval(1.9, 1.7, 2.1, 9), "c": None}
    r = speed_ranking({**ivs, "d": Interval(1.5, 1.3, 1.6, 9), "e": Interval(3, 0.9, 5, 9)})
    assert (r.fastest, r.tied, r.superior) == ("a", ["a", "b"], ["a", "b", "d"])
    # paired by round: a slow round (a neighbour's burst) slows both, the ratio stays 2
    base = [0.2, 0.2, 0.8, 0.2, 0.2, 0.2]
    iv = paired_speedup(base, [b / 2 for b in base], samples=500, seed=1)
    assert (iv.point, iv.low, iv.high, iv.n) == (pytest.approx(2.0),) * 3 + (6,)
    assert paired_speedup([0.2], [0.1]) is None  # one round: no interval


def test_unknown_tie_break_key_is_named():
    import yaml

    raw = yaml.safe_load(open("configs/smoke.yaml"))
    raw["selection"] = {"tie_break": ["retention_low", "beauty"]}
    with pytest.raises(ConfigError, match="beauty"):
        validate_config(raw, "smoke.yaml")


def test_the_schemas_tie_break_keys_are_the_rules():
    from nash_core.config import TIE_BREAK_KEYS
    from nash_core.selection import TIE_BREAKS

    assert tuple(TIE_BREAKS) == TIE_BREAK_KEYS
