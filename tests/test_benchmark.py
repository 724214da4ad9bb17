"""Benchmark statistics with a fake model of known latency; the CLI on real tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from measure_tiny import FakeClock, FakeModel, save_tiny_t5, write_splits
from tiny_t5 import tiny_t5

from nash_cli.main import main as nash_main
from nash_core import benchmark as B
from nash_core.config import BenchmarkConfig, EvaluationConfig
from nash_core.evaluate import generation_config_for, run_generate
from nash_core.quantize import quantize_dynamic_int8


def test_latency_stats_known_values():
    s = B.latency_stats([i / 1000 for i in range(1, 11)])  # 1..10 ms
    assert s["median_ms"] == pytest.approx(5.5)
    assert s["p90_ms"] == pytest.approx(9.1)
    assert s["mean_ms"] == pytest.approx(5.5)
    assert (s["min_ms"], s["max_ms"], s["n"]) == (pytest.approx(1.0), pytest.approx(10.0), 10)


def test_timed_rounds_interleaves_discards_warmup_and_syncs_around_each_call():
    clock, events = FakeClock(), []
    costs = {"A": [50.0, 10.0, 10.0, 10.0], "B": [70.0, 30.0, 30.0, 30.0]}  # first call is slow

    def fn(name):
        def run():
            clock.advance(costs[name].pop(0))
            events.append(name)
            return name

        return run

    times, last = B.timed_rounds(
        [fn("A"), fn("B")], warmup=1, repeats=3, clock=clock, sync=lambda: events.append("sync")
    )
    assert [e for e in events if e != "sync"] == ["A", "B"] * 4
    assert events[:6] == ["sync", "A", "sync", "sync", "B", "sync"]
    assert times == [[pytest.approx(0.010)] * 3, [pytest.approx(0.030)] * 3]
    assert last == ["A", "B"]


def test_timed_rounds_rotate_changes_who_goes_first_but_not_what_is_attributed():
    clock, events = FakeClock(), []
    costs = {"A": 10.0, "B": 20.0, "C": 30.0}

    def fn(name):
        def run():
            clock.advance(costs[name])
            events.append(name)

        return run

    times, _ = B.timed_rounds(
        [fn("A"), fn("B"), fn("C")], warmup=1, repeats=3, clock=clock, rotate=True
    )
    assert events == [
        "A",
        "B",
        "C",
        "B",
        "C",
        "A",
        "C",
        "A",
        "B",
        "A",
        "B",
        "C",
    ]  # warm-up round first
    assert times == [
        [pytest.approx(0.010)] * 3,
        [pytest.approx(0.020)] * 3,
        [pytest.approx(0.030)] * 3,
    ]


def _cands(clock, log, **kw):
    teacher = FakeModel(clock, enc_ms=4.0, step_ms=3.0, name="teacher", log=log, **kw)
    student = FakeModel(clock, enc_ms=4.0, step_ms=1.0, name="student", log=log, **kw)
    return [B.Candidate("teacher", teacher), B.Candidate("student", student)]


def test_benchmark_loaded_statistics_with_fake_model():
    clock, log = FakeClock(), []
    cands = _cands(clock, log, natural_len=5, slow_first=2, slow_ms=500.0)
    bench = BenchmarkConfig(
        batch_sizes=[1, 4], warmup=2, repeats=5, fixed_new_tokens=8, price_per_hour=3.6
    )
    rows = [[5, 6, 7], [8, 9]]
    res = B.benchmark_loaded(
        cands, [rows, rows], bench, EvaluationConfig(), clock=clock, measure_memory=False
    )
    t, s = (r["results"] for r in res)
    # natural: 5 steps (EOS at 5); teacher 4 + 5*3 = 19 ms, student 4 + 5 = 9 ms;
    # warm-up (500 ms) gone
    assert t["natural"]["1"]["latency"]["median_ms"] == pytest.approx(19.0)
    assert t["natural"]["1"]["latency"]["max_ms"] == pytest.approx(19.0)
    assert s["natural"]["1"]["latency"]["median_ms"] == pytest.approx(9.0)
    assert s["natural"]["1"]["speedup"] == pytest.approx(19.0 / 9.0)
    assert t["natural"]["1"]["speedup"] == pytest.approx(1.0)
    # fixed: 8 steps: teacher 28 ms, student 12 ms
    f_t, f_s = t["fixed"]["4"], s["fixed"]["4"]
    assert f_t["latency"]["median_ms"] == pytest.approx(28.0)
    assert f_s["speedup"] == pytest.approx(28.0 / 12.0)
    assert f_s["new_tokens_per_sequence"] == 8 and f_s["generated_tokens"] == 32
    assert f_s["ms_per_token"] == pytest.approx(12.0 / 8)
    assert f_s["tokens_per_s"] == pytest.approx(32 / 0.012)
    assert f_s["sequences_per_s"] == pytest.approx(4 / 0.012)
    assert f_s["encoder"]["median_ms"] == pytest.approx(4.0)
    assert f_s["decoder_median_ms"] == pytest.approx(8.0)
    # cost: 3.6 $/h = 0.001 $/s; 3 ms per request -> 0.003 $ per 1k requests
    assert f_s["cost_per_1k_requests"] == pytest.approx(0.001 * 0.003 * 1000)
    assert f_s["cost_per_1m_tokens"] == pytest.approx(0.001 * 1e6 / (32 / 0.012))
    # natural mode counts tokens up to EOS: 5 per sequence
    assert s["natural"]["4"]["generated_tokens"] == 20
    # interleaved: generate calls alternate teacher/student
    gens = [name for name, what in log if what == "generate"]
    assert gens[:6] == ["teacher", "student"] * 3


def test_rounds_go_through_all_inputs_in_lockstep():
    """Natural decoding depends on the input: rounds cycle through the inputs (the same ones
    for every model in a round), so latency is a median over inputs and throughput counts the
    tokens of every timed round, not one input's."""
    clock, log = FakeClock(), []
    teacher = FakeModel(
        clock, enc_ms=4.0, step_ms=3.0, name="teacher", log=log, len_from_input=True
    )
    student = FakeModel(
        clock, enc_ms=4.0, step_ms=1.0, name="student", log=log, len_from_input=True
    )
    cands = [B.Candidate("teacher", teacher), B.Candidate("student", student)]
    rows = [[2, 9], [4, 9], [9, 9], [20, 9]]  # natural lengths 2, 4, 9, 20 new tokens
    bench = BenchmarkConfig(batch_sizes=[1], warmup=0, repeats=8, fixed_new_tokens=None)
    res = B.benchmark_loaded(
        cands,
        [rows, rows],
        bench,
        EvaluationConfig(max_new_tokens=64),
        clock=clock,
        measure_memory=False,
        modes=("natural",),
    )
    t, s = (r["results"]["natural"]["1"] for r in res)
    per_input = [4.0 + 3.0 * n for n in (2, 4, 9, 20)]  # teacher ms on each input
    assert (t["latency"]["min_ms"], t["latency"]["max_ms"]) == (
        pytest.approx(10.0),
        pytest.approx(64.0),
    )
    assert t["latency"]["median_ms"] == pytest.approx(float(np.median(per_input * 2)))
    assert t["latency"]["n"] == 8
    # every round on the same input for both models: the ratio of medians is the per-input one
    assert s["latency"]["median_ms"] == pytest.approx(
        float(np.median([4.0 + n for n in (2, 4, 9, 20)]))
    )
    assert t["new_tokens_per_sequence"] == pytest.approx((2 + 4 + 9 + 20) / 4)
    assert t["tokens_per_s"] == pytest.approx((2 + 4 + 9 + 20) / (sum(per_input) / 1000))


def test_interleaving_cancels_drift_that_sequential_timing_suffers():
    """The machine slows down steadily (thermal, a neighbour): +50% latency per second."""
    true_ratio = 3.0

    def drifting(clock, base_ms):
        def run():
            clock.advance(base_ms * (1.0 + 0.5 * clock.now))

        return run

    clock = FakeClock()
    inter, _ = B.timed_rounds([drifting(clock, 30.0), drifting(clock, 10.0)], 0, 20, clock=clock)
    inter_ratio = np.median(inter[0]) / np.median(inter[1])
    clock = FakeClock()
    seq_a, _ = B.timed_rounds([drifting(clock, 30.0)], 0, 20, clock=clock)
    seq_b, _ = B.timed_rounds([drifting(clock, 10.0)], 0, 20, clock=clock)
    seq_ratio = np.median(seq_a[0]) / np.median(seq_b[0])
    assert abs(inter_ratio / true_ratio - 1) < 0.03  # 2.96
    assert abs(seq_ratio / true_ratio - 1) > 0.15  # 2.45


def test_peak_memory_sees_a_temporary_allocation():
    def allocate():
        a = np.ones(100 * 2**20 // 8)  # 100 MiB, touched
        a += 1
        import time

        time.sleep(0.05)
        return float(a[0])

    mem = B.peak_memory(allocate, "cpu")
    assert mem["peak_rss_delta_mb"] > 70
    assert mem["cuda_peak_allocated_mb"] is None


_WARM_HEAP = """
import ctypes, ctypes.util, json, sys
import torch
from nash_core import benchmark as B
libc = ctypes.CDLL(ctypes.util.find_library("c"))
# a long-running process's state, made deterministic: freed heap stays mapped for reuse
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: never trim the heap top by itself
libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: 1 MiB blocks come from the heap

def fn():
    parts = [torch.ones(2**18) for _ in range(64)]  # 64 x 1 MiB, touched, freed together
    return float(sum(p[0] for p in parts))

for _ in range(3):
    fn()
trim = B.release_free_memory
B.release_free_memory = lambda: False
cached = B.peak_memory(fn, "cpu")["peak_rss_delta_mb"]
B.release_free_memory = trim
measured = B.peak_memory(fn, "cpu")["peak_rss_delta_mb"]
print(json.dumps({"cached": cached, "measured": measured}))
"""


def test_peak_memory_of_a_warm_call_is_not_hidden_by_the_allocators_cache():
    """After warm-up the C heap keeps the freed pages: without handing them back first, a call
    that needs 64 MiB shows a delta near 0 (what CPU benchmarks used to report)."""
    import subprocess
    import sys
    from pathlib import Path

    if not B.release_free_memory():
        pytest.skip("no glibc malloc_trim on this platform")
    out = subprocess.run(
        [sys.executable, "-c", _WARM_HEAP],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    assert mem["cached"] < 16, mem  # the allocator's cache hides the call's memory...
    assert mem["measured"] > 48, mem  # ...unless it is handed back first


def test_model_facts_counts_params_once_and_sees_int8(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    d = save_tiny_t5(tmp_path / "m")
    model = AutoModelForSeq2SeqLM.from_pretrained(str(d))
    facts = B.model_facts(model, d)
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert facts["params"] == sum(unique.values())
    assert facts["disk_mb"] > 0 and facts["decoder_layers"] == 2 and facts["dtype"] == "float32"
    q = B.model_facts(quantize_dynamic_int8(model))
    # quantised weights are counted; the tied lm_head becomes its own int8 copy
    assert q["params"] == facts["params"] + model.lm_head.weight.numel()
    assert q["weights_mb"] < facts["weights_mb"] * 0.75


def test_hardware_fingerprint_fields():
    hw = B.hardware_fingerprint("cpu", "float32", "sdpa", "laptop")
    for key in (
        "cpu_model",
        "cpu_cores_logical",
        "torch_threads",
        "gpu_name",
        "gpu_driver",
        "torch_version",
        "transformers_version",
        "dtype",
        "attn_implementation",
    ):
        assert key in hw
    assert hw["torch_threads"] == torch.get_num_threads() and hw["hardware_name"] == "laptop"


def test_cli_on_two_tiny_models_writes_full_json(tmp_path, capsys):
    teacher = save_tiny_t5(tmp_path / "teacher", dec=3)
    student = save_tiny_t5(tmp_path / "student", dec=1)
    out = tmp_path / "bench.json"
    rc = nash_main(
        [
            "benchmark",
            str(teacher),
            str(student),
            "--batch-sizes",
            "1,2",
            "--new-tokens",
            "4",
            "--max-new-tokens",
            "4",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--source-length",
            "8",
            "--num-inputs",
            "2",
            "--price-per-hour",
            "1.0",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "hardware:" in printed
    res = json.loads(out.read_text())
    assert res["settings"]["baseline"] == str(teacher) and res["settings"]["interleaved"] is True
    assert [m["decoder_layers"] for m in res["models"]] == [3, 1]
    for m in res["models"]:
        for mode in ("natural", "fixed"):
            for bs in ("1", "2"):
                r = m["results"][mode][bs]
                for key in (
                    "latency",
                    "encoder",
                    "decoder_median_ms",
                    "tokens_per_s",
                    "ms_per_token",
                    "speedup",
                    "cost_per_1k_requests",
                    "cost_per_1m_tokens",
                    "peak_rss_delta_mb",
                ):
                    assert r[key] is not None, (mode, bs, key)
        assert m["results"]["fixed"]["2"]["new_tokens_per_sequence"] == 4
    assert res["models"][0]["results"]["fixed"]["1"]["speedup"] == 1.0
    flat = B.flat_metrics(res["models"][1])
    assert {"latency_p50_ms_bs1", "fixed_latency_p50_ms_bs2", "speedup_bs1", "params_total"} <= set(
        flat
    )


def test_cli_with_real_text_inputs(tmp_path, capsys):
    model = save_tiny_t5(tmp_path / "m")
    splits = write_splits(tmp_path / "splits")
    rc = nash_main(
        [
            "benchmark",
            str(model),
            "--splits",
            str(splits),
            "--modes",
            "fixed",
            "--batch-sizes",
            "2",
            "--new-tokens",
            "3",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["settings"]["inputs"] == "5 test sources"
    assert list(res["models"][0]["results"]) == ["fixed"]


def test_cli_bad_input_exits_2_with_message(tmp_path, capsys):
    assert nash_main(["benchmark", str(tmp_path / "missing")]) == 2
    assert "model dir not found" in capsys.readouterr().err
    model = save_tiny_t5(tmp_path / "m")
    assert nash_main(["benchmark", str(model), "--modes", "fast"]) == 2
    assert "--modes" in capsys.readouterr().err
    assert nash_main(["benchmark", str(model), "--repeats", "0"]) == 2
    assert "repeats" in capsys.readouterr().err


def _structural_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "structural_speedup.py"
    spec = importlib.util.spec_from_file_location("structural_speedup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_structural_builder_shrinks_encoder_and_decoder_and_still_generates(family):
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
    )

    S = _structural_script()
    torch.manual_seed(0)
    if family == "t5":
        full = tiny_t5(64, seed=None, num_decoder_layers=4).eval()
    else:
        full = BartForConditionalGeneration(
            BartConfig(
                vocab_size=64,
                d_model=32,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_layers=2,
                decoder_layers=4,
                max_position_embeddings=64,
            )
        ).eval()
    cand, achieved = S.build_candidate(full, k=2, sparsity=0.5)
    assert achieved == pytest.approx(0.5)  # 2 of 4 heads, 32 of 64 units
    assert B.model_facts(cand)["decoder_layers"] == 2 and B.model_facts(full)["decoder_layers"] == 4

    def enc_params(m):
        return sum(
            p.numel()
            for n, p in m.named_parameters()
            if n.startswith(("encoder.", "model.encoder."))
        )

    assert enc_params(cand) < enc_params(full)
    ids = torch.randint(4, 64, (2, 7))
    gen_cfg = generation_config_for(cand, EvaluationConfig(), fixed_new_tokens=5)
    out = run_generate(cand, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, gen_cfg)
    assert out.shape == (2, 6)


def test_benchmark_models_skips_fixed_mode_when_no_fixed_length_is_configured(tmp_path):
    model = save_tiny_t5(tmp_path / "m")
    bench = BenchmarkConfig(
        batch_sizes=[1], num_inputs=1, warmup=0, repeats=1, fixed_new_tokens=None
    )
    res = B.benchmark_models(
        [model], bench, EvaluationConfig(max_new_tokens=3), source_length=5, device="cpu"
    )
    assert list(res["models"][0]["results"]) == ["natural"]


# ------------------------------------------------------------------ intervals, extra rounds
def _noisy(clock, base_ms, rng, noise):
    """A timed fn whose calls cost ``base_ms`` times a random factor in [1, 1 + noise]."""

    def run():
        clock.advance(base_ms * (1.0 + noise * rng.random()))

    return run


def _extra(base_ms, noise, repeats=6, extra=30, seconds=600.0, seed=0):
    clock, rng = FakeClock(), np.random.default_rng(seed)
    names = ["teacher", *(f"m{i}" for i in range(1, len(base_ms)))]
    fns = [_noisy(clock, ms, rng, noise) for ms in base_ms]
    cfg = BenchmarkConfig(repeats=repeats, extra_rounds=extra, max_extra_seconds=seconds)
    times, outs = B.timed_rounds(fns, 0, repeats, clock, keep_outputs=True)
    log = B.extra_rounds(names, fns, times, outs, cfg, B.AdaptivePlan(1), clock)
    return log, times, cfg


def test_extra_rounds_separate_close_candidates_and_leave_the_rest_alone():
    # true speedups 2.0 (m1) and 1.75 (m2), 30% noise per call: 6 rounds overlap; m3 (1.1x) is
    # clearly slower and never timed again
    log, times, cfg = _extra([100.0, 50.0, 100.0 / 1.75, 100.0 / 1.1], noise=0.3)
    assert log["candidates"] == ["m1", "m2"]
    assert log["stopped"] == "separated" and log["tied_after"] == ["m1"]
    assert 0 < log["extra_rounds"] <= cfg.extra_rounds
    n = cfg.repeats + log["extra_rounds"]
    assert [len(t) for t in times] == [n, n, n, cfg.repeats]
    speed, _ = B.round_intervals(times, cfg)
    assert speed[1].above(speed[2])


def test_extra_rounds_stop_at_their_round_and_time_budgets():
    # two equally fast candidates never separate: the budget ends it
    log, times, cfg = _extra([100.0, 50.0, 50.0], noise=0.3, extra=20)
    assert log["stopped"] == "budget" and log["extra_rounds"] == 20
    assert log["tied_after"] == ["m1", "m2"] or log["tied_after"] == ["m2", "m1"]
    # a time budget of 1.2 s at ~0.23 s per round (100 + 2 x 50 ms, up to +30%) fits 5 rounds
    log, _, _ = _extra([100.0, 50.0, 50.0], noise=0.3, extra=1000, seconds=1.2)
    assert log["stopped"] == "budget" and 1 <= log["extra_rounds"] <= 6
    assert log["seconds"] <= 1.2
    # nothing superior, or one clear winner: no extra round at all
    assert _extra([100.0, 120.0], noise=0.1)[0]["extra_rounds"] == 0
    assert _extra([100.0, 50.0, 90.0], noise=0.01)[0]["stopped"] == "no overlap"


def test_benchmark_loaded_logs_intervals_and_adaptive_rounds():
    clock, log = FakeClock(), []
    teacher = FakeModel(clock, enc_ms=4.0, step_ms=3.0, name="teacher", log=log)
    twin_a = FakeModel(clock, enc_ms=4.0, step_ms=1.0, name="a", log=log)
    twin_b = FakeModel(clock, enc_ms=4.0, step_ms=1.0, name="b", log=log)
    slow = FakeModel(clock, enc_ms=4.0, step_ms=2.5, name="slow", log=log)
    cands = [B.Candidate(m.name, m, {"params": 1}) for m in (teacher, twin_a, twin_b, slow)]
    bench = BenchmarkConfig(batch_sizes=[1], warmup=0, repeats=4, extra_rounds=8)
    rows = [[5, 6, 7]]
    res = B.benchmark_loaded(
        cands,
        [rows] * 4,
        bench,
        EvaluationConfig(),
        clock=clock,
        measure_memory=False,
        modes=("natural",),
        adaptive=B.AdaptivePlan(1, eligible=["a", "b", "slow"]),
    )
    t, a, b, s = (r["results"]["natural"]["1"] for r in res)
    assert t["adaptive"]["candidates"] == ["a", "b"] and t["adaptive"]["extra_rounds"] == 8
    assert [len(r["rounds_ms"]) for r in (t, a, b, s)] == [12, 12, 12, 4]
    # 19 ms vs 9 ms every round: the interval is the point
    assert a["speedup_interval"] == {"point": 19 / 9, "low": 19 / 9, "high": 19 / 9, "n": 12}
    assert s["median_interval"]["low"] == pytest.approx(16.5)
    flat = B.flat_metrics(res[1])
    assert flat["speedup_bs1_low"] == pytest.approx(19 / 9)
    assert flat["latency_p50_ms_bs1_high"] == pytest.approx(9.0)
    assert flat["bench_rounds_bs1"] == 12
    assert B.flat_metrics(res[0])["bench_extra_rounds_bs1"] == 8
    # eligible limits who may get extra rounds: with only "a" eligible nothing is tied
    res = B.benchmark_loaded(
        cands,
        [rows] * 4,
        bench,
        EvaluationConfig(),
        clock=clock,
        measure_memory=False,
        modes=("natural",),
        adaptive=B.AdaptivePlan(1, eligible=["a"]),
    )
    assert res[0]["results"]["natural"]["1"]["adaptive"]["extra_rounds"] == 0
