"""Champion policy and Pareto frontier on hand-made candidate tables."""

import pandas as pd
import pytest

from nash_core.config import SelectionConfig
from nash_core.selection import choose_champion, latency_column, pareto_frontier

LAT = "latency_p50_ms_bs1"


def table(*rows):
    """Rows as logged; the speedup over the teacher (100 ms) gets a +-5% interval, as a quiet
    machine would give (tests/test_selection_rule.py covers the intervals themselves)."""
    cols = ["label", "method", "rougeL", "rougeL_retention", "rougeL_delta_ci_low", LAT, "run_id"]
    df = pd.DataFrame([dict(zip(cols, r)) for r in rows])
    speedup = 100.0 / pd.to_numeric(df[LAT])
    df["speedup_bs1"], df["speedup_bs1_low"], df["speedup_bs1_high"] = (
        speedup,
        speedup * 0.95,
        speedup * 1.05,
    )
    return df


TEACHER = ("teacher", "teacher", 0.80, 1.0, 0.0, 100.0, "t")


def test_latency_column_names_the_batch_size():
    assert latency_column(SelectionConfig(batch_size=8)) == "latency_p50_ms_bs8"


def test_pareto_frontier_drops_dominated_and_missing():
    df = table(
        TEACHER,
        ("a", "nash", 0.78, 0.975, -0.01, 40.0, "a"),
        ("b", "nash", 0.70, 0.875, -0.1, 50.0, "b"),  # dominated by a
        ("c", "sft", 0.60, 0.75, -0.2, 20.0, "c"),
        ("d", "cofi", float("nan"), None, None, 10.0, "d"),
        ("e", "nash", 0.78, 0.975, -0.01, 40.0, "e"),
    )  # ties a: neither dominates
    on = pareto_frontier(df, "rougeL", LAT)
    assert dict(zip(df["label"], on)) == {
        "teacher": True,
        "a": True,
        "b": False,
        "c": True,
        "d": False,
        "e": True,
    }


def test_fastest_qualifier_wins_with_reason():
    df = table(
        TEACHER,
        ("slow-good", "nash", 0.80, 1.0, 0.0, 60.0, "r1"),
        ("fast-good", "nash", 0.77, 0.9625, -0.015, 30.0, "r2"),
        ("fastest-bad", "sft", 0.60, 0.75, -0.2, 10.0, "r3"),
        ("ci-bad", "cofi", 0.79, 0.99, -0.05, 20.0, "r4"),
    )
    d = choose_champion(df, SelectionConfig(min_retention=0.95, min_retention_low=0.975))
    assert (d.label, d.run_id, d.is_teacher) == ("fast-good", "r2", False)
    assert d.qualified == ["slow-good", "fast-good"]
    assert "speedup_bs1 3.333 [3.167, 3.500]" in d.reason
    assert "rougeL_retention 0.75 < 0.95" in d.rejected["fastest-bad"]
    # -0.05 on a teacher at 0.80: the retention's lower bound is 1 - 0.05 / 0.80 = 0.9375
    assert "retention lower bound 0.9375 < 0.975" in d.rejected["ci-bad"]
    assert "slower" in d.rejected["slow-good"]
    assert "champion: fast-good (run r2)" in d.as_text()


def test_teacher_when_none_qualifies_or_none_is_faster():
    bad = table(TEACHER, ("x", "nash", 0.5, 0.625, -0.3, 10.0, "x"))
    d = choose_champion(bad, SelectionConfig())
    assert d.is_teacher and d.label == "teacher" and d.run_id == "t"
    assert "no candidate qualifies" in d.reason

    slow = table(TEACHER, ("y", "nash", 0.8, 1.0, 0.0, 120.0, "y"))
    d = choose_champion(slow, SelectionConfig())
    assert d.is_teacher and "no candidate qualifies" in d.reason and d.qualified == []
    assert "not superior in speed" in d.rejected["y"]


def test_missing_metric_disqualifies_and_missing_column_is_named():
    df = table(TEACHER, ("z", "nash", 0.8, 1.0, None, 5.0, "z"))
    d = choose_champion(df, SelectionConfig())
    assert d.is_teacher and "missing" in d.rejected["z"]
    with pytest.raises(KeyError, match="latency_p50_ms_bs1"):
        choose_champion(df.drop(columns=[LAT]), SelectionConfig())


def test_both_bounds_are_relative_to_the_teacher():
    """The same absolute CI means more on a weak teacher: the bound scales with its ROUGE-L."""
    for teacher_q, qualifies in ((0.80, True), (0.40, False)):
        t = ("teacher", "teacher", teacher_q, 1.0, 0.0, 100.0, "t")
        # delta CI low -0.03: 1 - 0.03/0.80 = 0.9625 >= 0.95, but 1 - 0.03/0.40 = 0.925 < 0.95
        df = table(t, ("s", "nash", teacher_q, 1.0, -0.03, 40.0, "s"))
        d = choose_champion(df, SelectionConfig(min_retention=0.95, min_retention_low=0.95))
        assert (d.label == "s") is qualifies, d.as_text()
    assert "lower confidence bound >= 0.95" in d.reason and "interval above 1" in d.reason


def test_old_max_drop_key_says_what_replaced_it():
    import yaml

    from nash_core.config import ConfigError, validate_config

    raw = yaml.safe_load(open("configs/smoke.yaml"))
    raw["selection"] = {"max_drop": 0.03}
    with pytest.raises(ConfigError, match="min_retention_low"):
        validate_config(raw, "smoke.yaml")
