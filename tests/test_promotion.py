"""The promotion gate, the alias history and hardware-qualified tables (nash_core.promotion),
and the hardware names MLflow accepts (nash_mlflow.registry.check_hardware_name)."""

import json

import pandas as pd
import pytest

from nash_core.config import SelectionConfig
from nash_core.promotion import (
    champion_lineage,
    default_hardware_name,
    hardware_names,
    hardware_table,
    hw_metric,
    next_move_key,
    parse_moves,
    promotion_gate,
    rollback_target,
)
from nash_mlflow.registry import check_hardware_name
from nash_mlflow.sweeps import SweepError

SEL = SelectionConfig(min_retention=0.95, min_retention_low=0.9)
CHAMP = {"label": "m v1", "rougeL": 0.80, "latency_ms": 100.0}


def challenger(rougeL, low, high, ms, spread=0.02):
    """Speedup over the champion (100 ms) with a +-``spread`` interval (paired by round)."""
    speedup = CHAMP["latency_ms"] / ms
    return {
        "label": "new",
        "rougeL": rougeL,
        "rougeL_delta_ci_low": low,
        "rougeL_delta_ci_high": high,
        "latency_ms": ms,
        "speedup": speedup,
        "speedup_low": speedup - spread,
        "speedup_high": speedup + spread,
    }


def test_gate_passes_an_equal_or_better_challenger_that_is_not_slower():
    gate = promotion_gate(CHAMP, challenger(0.81, -0.01, 0.03, 98.0), SEL, max_slowdown=0.05)
    assert gate.passed, gate.reason
    assert gate.numbers["rougeL_retention"] == pytest.approx(0.81 / 0.80)
    assert gate.numbers["slowdown"] == pytest.approx(-0.02)
    assert "PASSED" in gate.as_text()


def test_gate_refuses_a_worse_challenger_with_the_policys_words():
    # retention 0.9 < 0.95, and the CI low end -0.15 on 0.8 bounds retention at 0.81 < 0.9
    gate = promotion_gate(CHAMP, challenger(0.72, -0.15, -0.02, 50.0), SEL, max_slowdown=0.05)
    assert not gate.passed and gate.reason.startswith("quality:")
    assert "rougeL_retention 0.9 < 0.95" in gate.reason
    assert "lower bound" in gate.reason and "speed" not in gate.reason
    assert "the selection rule, with the champion as the baseline" in gate.reason


def test_gate_refuses_a_slower_challenger_even_when_quality_holds():
    gate = promotion_gate(CHAMP, challenger(0.80, -0.01, 0.01, 110.0), SEL, max_slowdown=0.05)
    assert not gate.passed
    # 100 / 110 = 0.909 [0.889, 0.929]: below 1 / 1.05 = 0.952
    assert gate.reason.startswith("speed: not superior in speed: speedup_bs1 0.909 [0.889, 0.929]")
    assert "does not lie above 0.9524" in gate.reason
    assert promotion_gate(
        CHAMP, challenger(0.80, -0.01, 0.01, 110.0), SEL, max_slowdown=0.15
    ).passed


def test_gate_is_the_selection_rule_with_a_tolerance():
    """An equally fast challenger (interval around 1) passes within the tolerance; with
    max_slowdown 0 the gate is exactly the sweep's rule: it must be faster beyond the noise.
    A challenger without a speedup interval cannot be judged and fails."""
    same = challenger(0.80, -0.01, 0.01, 100.0, spread=0.03)
    assert promotion_gate(CHAMP, same, SEL, max_slowdown=0.05).passed
    strict = promotion_gate(CHAMP, same, SEL, max_slowdown=0.0)
    assert not strict.passed and "does not lie above 1" in strict.reason
    assert promotion_gate(CHAMP, challenger(0.80, -0.01, 0.01, 80.0), SEL, 0.0).passed
    blind = {**same, "speedup_low": None, "speedup_high": None}
    gate = promotion_gate(CHAMP, blind, SEL, max_slowdown=0.05)
    assert not gate.passed and "speedup interval missing" in gate.reason


def test_a_champion_scoring_zero_has_no_quality_to_lose():
    zero = {**CHAMP, "rougeL": 0.0}
    assert promotion_gate(zero, challenger(0.0, 0.0, 0.0, 90.0), SEL, 0.05).passed
    assert not promotion_gate(zero, challenger(0.3, 0.1, 0.4, 120.0), SEL, 0.05).passed  # slower


def move(alias, frm, to, kind="promote"):
    return {"alias": alias, "from": frm, "to": to, "kind": kind}


def test_rollback_goes_back_through_the_champions_in_order():
    moves = [
        move("champion", None, "1", "sweep"),
        move("challenger", None, "2", "sweep"),
        move("champion", "1", "2", "gate"),
        move("champion", "2", "3"),
        move("champion-box", None, "3", "select"),
    ]
    assert champion_lineage(moves, "champion") == ["1", "2", "3"]
    assert rollback_target(moves, "champion", "3") == "2"
    moves.append(move("champion", "3", "2", "rollback"))
    assert rollback_target(moves, "champion", "2") == "1"  # not back to 3
    moves.append(move("champion", "2", "1", "rollback"))
    assert rollback_target(moves, "champion", "1") is None
    assert rollback_target([], "champion", "4") is None  # moved outside nash: no record


def test_moves_are_numbered_tags_read_back_in_order():
    tags = {}
    for i, m in enumerate([move("champion", None, "1"), move("champion", "1", "2")]):
        key = next_move_key(tags)
        tags[key] = json.dumps(m)
    tags["nash.other"] = "x"
    assert sorted(tags) == ["nash.move.000001", "nash.move.000002", "nash.other"]
    assert [m["to"] for m in parse_moves(tags)] == ["1", "2"]


def test_hardware_table_replaces_every_speed_column_and_keeps_quality():
    df = pd.DataFrame(
        [
            {
                "label": "teacher",
                "method": "teacher",
                "rougeL": 0.8,
                "latency_p50_ms_bs1": 10.0,
                "latency_p50_ms": 10.0,
                "speedup_bs1": 1.0,
                "fixed_latency_p50_ms_bs1": 9.0,
                "params_total": 5.0,
                hw_metric("gpu-x", "latency_p50_ms_bs1"): 2.0,
                hw_metric("other", "latency_p50_ms_bs1"): 7.0,
            }
        ]
    )
    table = hardware_table(df, "gpu-x")
    assert table.loc[0, "latency_p50_ms_bs1"] == 2.0
    assert "latency_p50_ms" not in table and "fixed_latency_p50_ms_bs1" not in table
    assert table.loc[0, "rougeL"] == 0.8 and table.loc[0, "params_total"] == 5.0
    assert not any(c.startswith("hw/") for c in table.columns)
    assert hardware_names(df.columns) == ["gpu-x", "other"]


def test_default_hardware_names_are_valid_mlflow_names():
    cpu = {"cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "torch_threads": 2, "gpu_name": None}
    gpu = {"cpu_model": "AMD EPYC 7B13", "torch_threads": 8, "gpu_name": "NVIDIA H100 80GB HBM3"}
    assert default_hardware_name(cpu) == "intel-xeon-2t"
    assert default_hardware_name(gpu) == "nvidia-h100-80gb-hbm3"
    for fp in (cpu, gpu):
        assert check_hardware_name(default_hardware_name(fp)) == default_hardware_name(fp)


@pytest.mark.parametrize("bad", ["a100 (80GB)", "box/b", "", "gpu@home"])
def test_hardware_names_mlflow_rejects_are_refused(bad):
    with pytest.raises(SweepError, match="hardware name"):
        check_hardware_name(bad)
