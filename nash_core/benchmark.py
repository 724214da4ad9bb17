"""Hardware benchmark of seq2seq models: end-to-end ``generate`` latency, throughput, memory, cost.

Protocol (method.md section 6): the same fixed inputs for every model, warm-up calls
discarded, the device synchronised before every clock read, repeated; median / p90 / mean / min
per batch size. Two modes: ``natural`` decodes with the evaluation protocol (what users get);
``fixed`` forces exactly N new tokens so architectures are compared at equal output length.
All models run in ONE process with their calls interleaved (A B A B ...), so slow drift of a
shared machine (thermal, other processes) hits every model alike; speedup = the median over
rounds of (baseline time / model time in that round), the baseline being the first model (the
teacher), with a bootstrap interval over rounds (nash_core/intervals.py). When the fastest
candidates' intervals overlap, :func:`extra_rounds` times just those (and the baseline) for more
rounds, within a budget.

The timing core (:func:`timed_rounds`, :func:`latency_stats`, :func:`benchmark_loaded`) takes
an injectable clock and synchroniser, so tests drive it with a fake model whose latency is
known exactly instead of asserting on wall-clock time.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from nash_core.config import BenchmarkConfig, EvaluationConfig
from nash_core.errors import DataError, ModelError
from nash_core.evaluate import generated_lengths, generation_config_for, run_generate
from nash_core.intervals import Interval, median_interval, paired_speedup, speed_ranking
from nash_core.progress import progress_disabled

Clock = Callable[[], float]
MODES = ("natural", "fixed")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- timing core
def device_sync(device: torch.device | str) -> Callable[[], None]:
    """What must run before each clock read so queued GPU work is included (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def timed_rounds(
    fns: Sequence[Callable[[], Any]],
    warmup: int,
    repeats: int,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
    desc: str = "timing",
    keep_outputs: bool = False,
    rotate: bool = False,
) -> tuple[list[list[float]], list[Any]]:
    """Call ``fns`` interleaved, round after round: f0 f1 ... f0 f1 ...

    The first ``warmup`` rounds are run and discarded. Each call is bracketed by
    sync-then-clock on both sides. Returns (seconds per fn per kept round, last result per fn),
    or with ``keep_outputs`` (seconds, every kept round's result per fn). With ``rotate`` round
    r starts at fn r mod n (f0 f1 f2, f1 f2 f0, ...), so no fn always runs right after the same
    neighbour.
    """
    times: list[list[float]] = [[] for _ in fns]
    last: list[Any] = [None] * len(fns)
    kept: list[list[Any]] = [[] for _ in fns]
    for r in tqdm(
        range(warmup + repeats), desc=desc, unit="round", leave=False, disable=progress_disabled()
    ):
        shift = r % len(fns) if rotate and fns else 0
        for i in [*range(shift, len(fns)), *range(shift)]:
            fn = fns[i]
            sync()
            t0 = clock()
            last[i] = fn()
            sync()
            t1 = clock()
            if r >= warmup:
                times[i].append(t1 - t0)
                if keep_outputs:
                    kept[i].append(last[i])
    return times, (kept if keep_outputs else last)


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """median / p90 / mean / min / max / std in milliseconds (p90 by linear interpolation)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "std_ms": float(ms.std()),
        "n": int(ms.size),
    }


def peak_memory(
    fn: Callable[[], Any], device: torch.device | str, interval_s: float = 0.001
) -> dict[str, float | None]:
    """Peak memory of one call of ``fn`` above what was in use before it.

    CPU: resident set size sampled every ``interval_s`` by a thread (psutil), so a spike shorter
    than the interval can be missed. The C allocator keeps freed memory mapped for reuse, so in
    a warm process (after warm-up calls) a call would reuse pages that are already resident and
    show a delta near 0; freed heap pages are handed back to the OS first
    (:func:`release_free_memory`), so the delta is the memory the call itself touches.
    CUDA: ``max_memory_allocated`` (exact, torch allocations).
    """
    proc = psutil.Process()
    release_free_memory()
    before = proc.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(interval_s)

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
        if cuda:
            torch.cuda.synchronize()
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    out: dict[str, float | None] = {
        "peak_rss_delta_mb": (peak[0] - before) / 2**20,
        "cuda_peak_allocated_mb": None,
        "cuda_peak_delta_mb": None,
    }
    if cuda:
        top = torch.cuda.max_memory_allocated()
        out["cuda_peak_allocated_mb"] = top / 2**20
        out["cuda_peak_delta_mb"] = (top - cuda_before) / 2**20
    return out


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, looked up once (``find_library`` runs ``ldconfig``); None
    elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``); False where unavailable."""
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


# --------------------------------------------------------------------------- models and inputs
@dataclass
class Candidate:
    """A loaded model to benchmark. ``info``: static facts (params, sizes, dtype, attention)."""

    name: str
    model: Any
    info: dict = field(default_factory=dict)


def model_facts(model, model_dir: str | Path | None = None) -> dict:
    """Parameter count, in-memory weight size, on-disk size, dtype, attention, depths."""
    if hasattr(model, "facts"):  # another runtime's model (nash_core.runtimes) knows its own
        return model.facts()
    seen, params, nbytes = set(), 0, 0
    for module in model.modules():
        weight_fn = getattr(module, "weight", None)
        if callable(weight_fn) and not isinstance(weight_fn, torch.Tensor):  # quantised Linear
            w = weight_fn()
            params, nbytes = params + w.numel(), nbytes + w.numel() * w.element_size()
            bias = module.bias()
            if bias is not None:
                params, nbytes = params + bias.numel(), nbytes + bias.numel() * bias.element_size()
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            if isinstance(t, torch.nn.Parameter):
                params += t.numel()
            nbytes += t.numel() * t.element_size()
    cfg = getattr(model, "config", None)
    disk = None
    if model_dir is not None:
        disk = sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file()) / 2**20
    first = next(iter(model.parameters()), None)
    return {
        "params": params,
        "weights_mb": nbytes / 2**20,
        "disk_mb": disk,
        "dtype": str(first.dtype).removeprefix("torch.") if first is not None else None,
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
        "model_type": getattr(cfg, "model_type", None),
        "encoder_layers": getattr(cfg, "num_layers", getattr(cfg, "encoder_layers", None)),
        "decoder_layers": getattr(cfg, "num_decoder_layers", getattr(cfg, "decoder_layers", None)),
    }


def random_inputs(
    num_inputs: int, source_length: int, vocab_size: int, seed: int = 0
) -> list[list[int]]:
    """Token-id rows for architecture benchmarks without text; ids 4.. skip the special ids."""
    rng = np.random.default_rng(seed)
    return rng.integers(4, vocab_size, size=(num_inputs, source_length)).tolist()


def make_batch(
    rows: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    device: torch.device | str,
    start: int = 0,
) -> dict[str, torch.Tensor]:
    """``batch_size`` rows from row ``start`` on (cycled when there are fewer), right-padded."""
    picked = [list(rows[(start + i) % len(rows)]) for i in range(batch_size)]
    width = max(len(r) for r in picked)
    ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch_size, width), dtype=torch.long)
    for i, r in enumerate(picked):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _pad_id(model) -> int:
    pad = getattr(model.generation_config, "pad_token_id", None)
    return 0 if pad is None else int(pad)


# --------------------------------------------------------------------------- measurement
def input_batches(
    rows: Sequence[Sequence[int]], batch_size: int, pad_id: int, device: torch.device | str
) -> list[dict[str, torch.Tensor]]:
    """Consecutive batches covering every row once (the last one wraps around)."""
    return [
        make_batch(rows, batch_size, pad_id, device, start)
        for start in range(0, max(len(rows), 1), batch_size)
    ]


def _cycling(batches: Sequence[dict], call: Callable[[dict], Any]) -> Callable[[], Any]:
    """A timed fn whose k-th call runs on batch k (cycled). Models timed interleaved advance in
    lockstep, so every round times all of them on the same inputs, and the rounds go through
    all the inputs: natural-decoding latency is a median over inputs, not one input's."""
    calls = [0]

    def run():
        batch = batches[calls[0] % len(batches)]
        calls[0] += 1
        return call(batch)

    return run


def _generate_fn(model, batches, gen_cfg):
    return _cycling(batches, lambda b: run_generate(model, b, gen_cfg))


def _encoder_fn(model, batches):
    encoder = model.get_encoder()

    def run(batch):
        with torch.inference_mode():
            return encoder(**batch)

    return _cycling(batches, run)


def _cost(price_per_hour: float, seconds_per_request: float, tokens_per_s: float) -> dict:
    if price_per_hour <= 0:
        return {"cost_per_1k_requests": None, "cost_per_1m_tokens": None}
    per_s = price_per_hour / 3600.0
    return {
        "cost_per_1k_requests": per_s * seconds_per_request * 1000.0,
        "cost_per_1m_tokens": per_s * 1e6 / tokens_per_s if tokens_per_s > 0 else None,
    }


def round_intervals(
    times: Sequence[Sequence[float]], bench_cfg: BenchmarkConfig, seed: int = 0
) -> tuple[list[Interval | None], list[Interval | None]]:
    """Per model: its speedup over model 0 paired by round, and its median latency (ms), each
    with its bootstrap interval over the rounds (nash_core/intervals.py); None under 2 rounds."""
    kw = {"samples": bench_cfg.bootstrap_samples, "confidence": bench_cfg.confidence, "seed": seed}
    speed = [paired_speedup(times[0], t, **kw) for t in times]
    median = [median_interval(t, **kw) for t in times]
    return speed, median


@dataclass
class AdaptivePlan:
    """Extra rounds at one batch size (natural mode) for the fastest candidates while their
    speedup intervals overlap. ``eligible``: the names that may win (non-inferior in quality);
    None: every candidate but the baseline."""

    batch_size: int
    eligible: Sequence[str] | None = None
    seed: int = 0


def _contenders(names, times, bench_cfg, plan: AdaptivePlan) -> list[str]:
    speed, _ = round_intervals(times, bench_cfg, plan.seed)
    allowed = set(names[1:] if plan.eligible is None else plan.eligible) - {names[0]}
    ranking = speed_ranking({n: iv for n, iv in zip(names, speed) if n in allowed})
    return ranking.tied


def extra_rounds(
    names: Sequence[str],
    fns: Sequence[Callable[[], Any]],
    times: list[list[float]],
    outputs: list[list[Any]],
    bench_cfg: BenchmarkConfig,
    plan: AdaptivePlan,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
) -> dict:
    """Time the tied fastest candidates (with the baseline, the pairing reference) for more
    interleaved rounds, appending to ``times`` / ``outputs`` in place, until their speedup
    intervals separate or ``benchmark.extra_rounds`` / ``max_extra_seconds`` is spent.

    The rounds go in chunks of ``benchmark.repeats``; before each chunk the intervals are
    recomputed on every round so far, and the chunk is cut to what the time budget still fits
    at the last measured pace. Returns the log: rounds added, who was timed, why it stopped.
    """
    tied = _contenders(names, times, bench_cfg, plan)
    log = {"batch_size": plan.batch_size, "extra_rounds": 0, "candidates": [], "seconds": 0.0}
    if len(tied) < 2:
        log["stopped"] = "no overlap" if tied else "no superior candidate"
        return {**log, "tied_after": tied}
    log["candidates"] = list(tied)
    idx = [0, *(names.index(n) for n in tied)]
    start, done = clock(), 0
    while len(tied) >= 2:
        left = bench_cfg.extra_rounds - done
        pace = sum(float(np.median(times[i])) for i in idx)
        fit = int((bench_cfg.max_extra_seconds - (clock() - start)) // pace) if pace > 0 else left
        chunk = min(bench_cfg.repeats, left, fit)
        if chunk < 1:
            log["stopped"] = "budget"
            break
        new, outs = timed_rounds(
            [fns[i] for i in idx], 0, chunk, clock, sync, f"extra bs{plan.batch_size}", True
        )
        for j, i in enumerate(idx):
            times[i].extend(new[j])
            outputs[i].extend(outs[j])
        done += chunk
        tied = _contenders(names, times, bench_cfg, plan)
    else:
        log["stopped"] = "separated"
    log.update(extra_rounds=done, seconds=clock() - start, tied_after=tied)
    return log


def benchmark_loaded(
    cands: Sequence[Candidate],
    input_rows: Sequence[Sequence[Sequence[int]]],
    bench_cfg: BenchmarkConfig,
    eval_cfg: EvaluationConfig,
    device: torch.device | str = "cpu",
    modes: Sequence[str] = MODES,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] | None = None,
    measure_memory: bool = True,
    adaptive: AdaptivePlan | None = None,
    seed: int = 0,
) -> list[dict]:
    """Time every candidate (interleaved) per batch size and mode; the first is the baseline.

    ``input_rows[i]`` are candidate i's token-id rows (the same texts through its tokenizer).
    Returns one dict per candidate: ``{"name", **info, "results": {mode: {batch_size: stats}}}``.
    Every result keeps its per-round times (``rounds_ms``) and the intervals of its speedup
    (``speedup_interval``, paired by round) and median latency (``median_interval``), seeded
    with ``seed``. With ``adaptive``, natural decoding at its batch size gets
    :func:`extra_rounds`, logged on the baseline's result (``adaptive``).
    """
    if "fixed" in modes and not bench_cfg.fixed_new_tokens:
        raise ModelError("mode 'fixed' needs benchmark.fixed_new_tokens (or --new-tokens N)")
    sync = sync or device_sync(device)
    out = [{"name": c.name, **c.info, "results": {m: {} for m in modes}} for c in cands]
    for bs in bench_cfg.batch_sizes:
        batches = [
            input_batches(rows, bs, _pad_id(c.model), device) for c, rows in zip(cands, input_rows)
        ]
        enc_times, _ = timed_rounds(
            [_encoder_fn(c.model, b) for c, b in zip(cands, batches)],
            bench_cfg.warmup,
            bench_cfg.repeats,
            clock,
            sync,
            f"encoder bs{bs}",
        )
        for mode in modes:
            fixed = bench_cfg.fixed_new_tokens if mode == "fixed" else None
            cfgs = [generation_config_for(c.model, eval_cfg, fixed) for c in cands]
            fns = [_generate_fn(c.model, b, g) for c, b, g in zip(cands, batches, cfgs)]
            times, outputs = timed_rounds(
                fns,
                bench_cfg.warmup,
                bench_cfg.repeats,
                clock,
                sync,
                f"{mode} bs{bs}",
                keep_outputs=True,
            )
            adaptive_log = None
            if adaptive is not None and mode == "natural" and bs == adaptive.batch_size:
                names = [c.name for c in cands]
                adaptive_log = extra_rounds(
                    names, fns, times, outputs, bench_cfg, adaptive, clock, sync
                )
                print(f"benchmark: adaptive rounds at batch {bs}: {_adaptive_text(adaptive_log)}")
            speed_iv, median_iv = round_intervals(times, bench_cfg, seed)
            for i, (c, t, outs, g) in enumerate(zip(cands, times, outputs, cfgs)):
                stats = latency_stats(t)
                enc = latency_stats(enc_times[i])
                median_s = stats["median_ms"] / 1000.0
                base_median = float(np.median(times[0][: len(t)]))  # the rounds both ran
                # rounds ran on different inputs: throughput = all tokens / all time
                total_s = float(sum(t))
                tokens = sum(int(sum(generated_lengths(seqs, g.eos_token_id))) for seqs in outs)
                steps = sum(int(seqs.shape[1]) - 1 for seqs in outs)
                tps = tokens / total_s if total_s > 0 else float("inf")
                res = {
                    "latency": stats,
                    "encoder": enc,
                    "decoder_median_ms": stats["median_ms"] - enc["median_ms"],
                    "new_tokens_per_sequence": steps / len(outs),
                    "generated_tokens": tokens / len(outs),  # per batch
                    "sequences_per_s": bs * len(outs) / total_s if total_s > 0 else float("inf"),
                    "tokens_per_s": tps,
                    "ms_per_token": 1000.0 * total_s / steps if steps else None,
                    "speedup": (
                        speed_iv[i].point
                        if speed_iv[i]
                        else (base_median / median_s if median_s > 0 else None)
                    ),
                    **_cost(bench_cfg.price_per_hour, median_s / bs, tps),
                    "rounds_ms": [x * 1000.0 for x in t],
                    "speedup_interval": speed_iv[i].as_dict() if speed_iv[i] else None,
                    "median_interval": median_iv[i].as_dict() if median_iv[i] else None,
                }
                if i == 0 and adaptive_log is not None:
                    res["adaptive"] = adaptive_log
                if measure_memory:
                    res.update(peak_memory(fns[i], device))
                out[i]["results"][mode][str(bs)] = res
    return out


def _adaptive_text(log: dict) -> str:
    who = ", ".join(log["candidates"]) or "none"
    return (
        f"{log['extra_rounds']} extra round(s) of {who} (and the baseline) in "
        f"{log['seconds']:.1f} s; stopped: {log['stopped']}; tied after: "
        f"{', '.join(log['tied_after']) or 'none'}"
    )


# --------------------------------------------------------------------------- hardware
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def hardware_fingerprint(
    device: torch.device | str = "cpu",
    dtype: str | None = None,
    attn_implementation: str | None = None,
    name: str | None = None,
) -> dict:
    """Everything a latency number depends on besides the model; stored with every result."""
    import transformers

    cuda = torch.device(device).type == "cuda"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "hardware_name": name,
        "device": str(device),
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "cpu_model": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(load[0], 2) if load else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu_name": torch.cuda.get_device_name() if cuda else None,
        "gpu_driver": _gpu_driver() if cuda else None,
        "cuda_version": torch.version.cuda if cuda else None,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------- model dirs
def benchmark_models(
    model_dirs: Sequence[str | Path],
    bench_cfg: BenchmarkConfig,
    eval_cfg: EvaluationConfig,
    *,
    texts: Sequence[str] | None = None,
    source_length: int = 64,
    max_source_length: int | None = None,
    device=None,
    modes: Sequence[str] | None = None,
    seed: int = 0,
    names: Sequence[str] | None = None,
    adaptive_batch: int | None = None,
    eligible: Sequence[str] | None = None,
) -> dict:
    """Load ``model_dirs`` (first = baseline) and benchmark them on the same inputs.

    ``adaptive_batch``: give the fastest candidates extra rounds at this batch size while their
    speedup intervals overlap (:func:`extra_rounds`; only ``eligible`` names, when given, count).

    ``texts`` (e.g. test sources with their prefix) are tokenised by each model's tokenizer;
    without texts, random token ids of ``source_length`` shared by all models are used.
    ``modes`` default: natural, plus fixed when ``bench_cfg.fixed_new_tokens`` is set.
    Returns {"hardware", "settings", "models": [...]} (see :func:`benchmark_loaded`).
    """
    from nash_core.quantize import default_device, load_for_measurement

    if not model_dirs:
        raise ModelError("benchmark needs at least one model dir")
    if modes is None:
        modes = MODES if bench_cfg.fixed_new_tokens else ("natural",)
    device = default_device(model_dirs) if device is None else torch.device(device)
    dtype = _DTYPES[bench_cfg.dtype]
    for d in model_dirs:
        if not Path(d).is_dir():
            raise ModelError(f"model dir not found: {d}")
    cands, tokenizers = [], []
    for i, d in enumerate(model_dirs):
        model, tok = load_for_measurement(d, device=device, dtype=dtype)
        info = {"dir": str(d), **model_facts(model, d)}
        cands.append(Candidate(names[i] if names else str(d), model, info))
        tokenizers.append(tok)
    if texts is not None:
        if not texts:
            raise DataError("no benchmark inputs: the test split is empty")
        picked = list(texts[: bench_cfg.num_inputs])
        rows = [
            tok(picked, truncation=max_source_length is not None, max_length=max_source_length)[
                "input_ids"
            ]
            for tok in tokenizers
        ]
        source = f"{len(picked)} test sources"
    else:
        vocab = min(c.model.config.vocab_size for c in cands)
        shared = random_inputs(bench_cfg.num_inputs, source_length, vocab, seed)
        rows = [shared] * len(cands)
        source = f"{bench_cfg.num_inputs} random token-id rows of length {source_length}"
    plan = None
    if adaptive_batch is not None and adaptive_batch in bench_cfg.batch_sizes:
        plan = AdaptivePlan(adaptive_batch, eligible, seed)
    models = benchmark_loaded(
        cands, rows, bench_cfg, eval_cfg, device, modes, adaptive=plan, seed=seed
    )
    adaptive = models[0]["results"].get("natural", {}).get(str(adaptive_batch), {}).get("adaptive")
    attn = sorted({str(c.info["attn_implementation"]) for c in cands})
    return {
        "hardware": hardware_fingerprint(
            device, bench_cfg.dtype, ",".join(attn), bench_cfg.hardware_name
        ),
        "settings": {
            "inputs": source,
            "batch_sizes": bench_cfg.batch_sizes,
            "warmup": bench_cfg.warmup,
            "repeats": bench_cfg.repeats,
            "modes": list(modes),
            "fixed_new_tokens": bench_cfg.fixed_new_tokens,
            "decoding": eval_cfg.model_dump(
                include={
                    "num_beams",
                    "max_new_tokens",
                    "min_new_tokens",
                    "length_penalty",
                    "no_repeat_ngram_size",
                }
            ),
            "price_per_hour": bench_cfg.price_per_hour,
            "baseline": cands[0].name,
            "interleaved": True,
            "intervals": {
                "speedup": "median of per-round ratios baseline / model, bootstrap over rounds",
                "confidence": bench_cfg.confidence,
                "bootstrap_samples": bench_cfg.bootstrap_samples,
                "seed": seed,
            },
            "adaptive": adaptive,
        },
        "models": models,
    }


def peak_mb(r: dict) -> float | None:
    """The peak-memory figure that matters on the device: CUDA allocations, else CPU RSS."""
    cuda = r.get("cuda_peak_delta_mb")
    return cuda if cuda is not None else r.get("peak_rss_delta_mb")


def flat_metrics(model_result: dict, mode: str = "natural") -> dict[str, float]:
    """One model's numbers as flat MLflow metrics: ``<metric>_bs<N>`` per batch size.

    ``mode`` (natural decoding by default, what users get) gives the unprefixed names that
    selection ranks on; the other mode is logged with a ``<mode>_`` prefix.
    """
    out: dict[str, float] = {"params_total": float(model_result["params"])}
    for m, per_bs in model_result["results"].items():
        prefix = "" if m == mode else f"{m}_"
        for bs, r in per_bs.items():
            vals = {
                "latency_p50_ms": r["latency"]["median_ms"],
                "latency_p90_ms": r["latency"]["p90_ms"],
                "latency_mean_ms": r["latency"]["mean_ms"],
                "latency_min_ms": r["latency"]["min_ms"],
                "encoder_ms": r["encoder"]["median_ms"],
                "decoder_ms": r["decoder_median_ms"],
                "ms_per_token": r["ms_per_token"],
                "tokens_per_s": r["tokens_per_s"],
                "sequences_per_s": r["sequences_per_s"],
                "speedup": r["speedup"],
                "peak_mem_mb": peak_mb(r),
                "cost_per_1k_requests": r["cost_per_1k_requests"],
                "cost_per_1m_tokens": r["cost_per_1m_tokens"],
            }
            out.update({f"{prefix}{k}_bs{bs}": float(v) for k, v in vals.items() if v is not None})
            out.update(_interval_metrics(r, f"{prefix}", f"_bs{bs}"))
    return out


def _interval_metrics(r: dict, prefix: str, suffix: str) -> dict[str, float]:
    """``speedup_bs1_low`` / ``_high``, ``latency_p50_ms_bs1_low`` / ``_high``, the number of
    timed rounds and of adaptive extra rounds (absent where the result has no interval)."""
    out: dict[str, float] = {}
    for key, name in (("speedup_interval", "speedup"), ("median_interval", "latency_p50_ms")):
        iv = r.get(key)
        if iv:
            out[f"{prefix}{name}{suffix}_low"] = float(iv["low"])
            out[f"{prefix}{name}{suffix}_high"] = float(iv["high"])
    if r.get("rounds_ms") is not None:
        out[f"{prefix}bench_rounds{suffix}"] = float(len(r["rounds_ms"]))
    if r.get("adaptive"):
        out[f"{prefix}bench_extra_rounds{suffix}"] = float(r["adaptive"]["extra_rounds"])
    return out


def _interval_cell(iv: dict | None, digits: int) -> str:
    return f"[{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]" if iv else "-"


def format_table(result: dict) -> str:
    """A compact text table: one line per model x mode x batch size, with the intervals."""
    head = (
        f"{'model':<28} {'params':>8} {'mode':<7} {'bs':>3} {'p50 ms':>9} {'p50 interval':>17} "
        f"{'p90 ms':>9} {'ms/tok':>7} {'tok/s':>8} {'enc ms':>8} {'speedup':>7} "
        f"{'speedup interval':>16}"
    )
    lines = [head, "-" * len(head)]
    for m in result["models"]:
        label = m["name"] if len(m["name"]) <= 28 else "..." + m["name"][-25:]
        for mode, per_bs in m["results"].items():
            for bs, r in per_bs.items():
                mpt = f"{r['ms_per_token']:.2f}" if r["ms_per_token"] is not None else "-"
                lines.append(
                    f"{label:<28} {m['params'] / 1e6:>7.1f}M {mode:<7} {bs:>3} "
                    f"{r['latency']['median_ms']:>9.1f} "
                    f"{_interval_cell(r.get('median_interval'), 1):>17} "
                    f"{r['latency']['p90_ms']:>9.1f} "
                    f"{mpt:>7} {r['tokens_per_s']:>8.1f} {r['encoder']['median_ms']:>8.1f} "
                    f"{r['speedup']:>6.2f}x {_interval_cell(r.get('speedup_interval'), 2):>16}"
                )
    adaptive = result.get("settings", {}).get("adaptive")
    if adaptive:
        lines.append(
            f"adaptive rounds at batch {adaptive['batch_size']}: {_adaptive_text(adaptive)}"
        )
    hw = result["hardware"]
    lines.append(
        f"hardware: {hw['gpu_name'] or hw['cpu_model']} | device {hw['device']} | "
        f"{hw['torch_threads']} torch threads | {hw['dtype']} | attn {hw['attn_implementation']} "
        f"| torch {hw['torch_version']} | transformers {hw['transformers_version']}"
    )
    return "\n".join(lines)
