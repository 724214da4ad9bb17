"""Serving runtimes at real shapes: PyTorch fp32 / int8 and CTranslate2 fp32 / int8, teacher and
NASH export, 1 and 2 threads, batch 1 and 8, on the t5-base and bart-base stand-ins.

    python benchmarks/runtime_table.py [--shapes t5-base,bart-base] [--rounds 5]
        [--standins /tmp/standins] [--json benchmarks/results/runtime_table.json]

Models (random weights: speed depends on shapes, not on weight values; no download):
- ``teacher``: the stand-in of the shape (``scripts/standin.py``: the exact architecture and
  vocabulary, a tokenizer trained on the demo corpus), written to ``--standins`` unless there;
- ``nash``: that model with k=3 uniform decoder layers and every encoder layer keeping 70% of
  its heads and FFN units (``structural_speedup.build_candidate``, the export's own
  ``restructure``), saved as a real NASH export (``save_exported``: ``modeling_nash.py``, shapes
  in config.json).
Each is converted to CTranslate2 (``nash_core.runtimes.ct2.convert``) in float32 and int8, with
the conversion's own check at tolerance 1e-4, and its float32 log-probabilities are compared
again with PyTorch's on the benchmark's first 128-token source and a 32-token target.

Latency: exactly 32 new tokens (greedy, EOS suppressed by a minimum length) from 128-token
sources of ordinary tokens; one untimed call per engine, then ``--rounds`` rounds, each timing
every engine once in turn (interleaved), per thread count (torch.set_num_threads and CT2's
``intra_threads``) and batch size. A speedup is the teacher's PyTorch fp32 median at the same
threads and batch divided by the engine's median: same process, same rounds. The hardware
fingerprint and the load average (start and end) are printed and stored: on a shared machine
the numbers are only as good as the load beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SOURCE_LEN, NEW_TOKENS, K, SPARSITY, TOLERANCE = 128, 32, 3, 0.3, 1e-4


def build_models(shape: str, standins: Path, work: Path) -> dict[str, Path]:
    """``{"teacher": stand-in dir, "nash": NASH export dir}`` for ``shape``."""
    from structural_speedup import build_candidate

    from nash_core.export import load_exported, save_exported
    from nash_core.standin import write_standin

    teacher = standins / shape
    if not (teacher / "config.json").is_file():
        write_standin(shape, teacher)
    model, tok = load_exported(teacher)
    nash, achieved = build_candidate(model, K, SPARSITY)
    out = save_exported(
        nash, tok, work / f"{shape}-nash", {"method": "nash", "target": SPARSITY, "arm": "nash"}
    )
    print(f"{shape}: NASH export k={K}, encoder sparsity {achieved:.3f} -> {out}", flush=True)
    return {"teacher": teacher, "nash": out}


def sources(tok, n: int, seed: int = 0) -> list[list[int]]:
    """``n`` sources of exactly SOURCE_LEN ids: ordinary tokens of the tokenizer, then EOS."""
    import torch

    special = set(tok.all_special_ids)
    pool = torch.tensor([i for i in range(len(tok)) if i not in special])
    g = torch.Generator().manual_seed(seed)
    rows = pool[torch.randint(len(pool), (n, SOURCE_LEN - 1), generator=g)].tolist()
    return [r + [tok.eos_token_id] for r in rows]


def convert_all(models: dict[str, Path], work: Path) -> dict:
    """CT2 float32 / int8 directories of every model, each checked at TOLERANCE."""
    from nash_core.runtimes.ct2 import convert

    out = {}
    for name, src in models.items():
        for q in ("float32", "int8"):
            t0 = time.perf_counter()
            d = convert(src, work / f"{src.name}.ct2-{q}", q, tolerance=TOLERANCE)
            meta = json.loads((d / "nash_runtime.json").read_text())
            out[(name, q)] = d
            print(
                f"  {name} -> CT2 {q}: check max |d log-prob| "
                f"{meta['check_max_abs_logprob_diff']:.2e} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return out


def logprob_check(model, ct2_dir: Path, src: list[int]) -> float:
    """Max |d log-prob| of CT2 float32 vs PyTorch on ``src`` and a fixed 32-token target."""
    from nash_core.runtimes.ct2 import CT2Generator, torch_log_probs

    tgt = src[1 : NEW_TOKENS + 1]
    ref = torch_log_probs(model, src, tgt)
    got = CT2Generator(ct2_dir, compute_type="float32").log_probs(src, tgt)
    if len(got) != len(ref):
        return float("inf")
    return max(abs(a - b) for a, b in zip(got, ref))


class Engines:
    """Callables ``engine(batch_ids) -> new tokens per row`` per (model, engine name), at one
    thread count."""

    def __init__(self, models: dict, torch_models: dict, ct2_dirs: dict, tok, threads: int):
        from nash_core.quantize import quantize_dynamic_int8
        from nash_core.runtimes.ct2 import CT2Generator

        self.tok, self.calls = tok, {}
        for name in models:
            fp32 = torch_models[name]
            self.calls[(name, "pytorch-fp32")] = self._torch(fp32)
            self.calls[(name, "pytorch-int8")] = self._torch(quantize_dynamic_int8(_copy(fp32)))
            for q in ("float32", "int8"):
                gen = CT2Generator(ct2_dirs[(name, q)], intra_threads=threads)
                self.calls[(name, f"ct2-{'fp32' if q == 'float32' else 'int8'}")] = self._ct2(gen)

    def _torch(self, model):
        import torch

        pad = model.config.pad_token_id

        def call(batch):
            ids = torch.tensor(batch)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad,
                )
            return [out.shape[1] - 1] * len(batch)  # new tokens (after the start token)

        return call

    def _ct2(self, gen):
        tokens_of = self.tok.convert_ids_to_tokens

        def call(batch):
            hyps = gen.translate_tokens(
                [tokens_of(row) for row in batch],
                {
                    "beam_size": 1,
                    "max_decoding_length": NEW_TOKENS,
                    "min_decoding_length": NEW_TOKENS,
                    "max_input_length": 0,
                },
            )
            return [len(h) for h in hyps]

        return call


def _copy(model):
    import copy

    return copy.deepcopy(model)


def time_cells(engines: Engines, batches: dict[int, list], rounds: int) -> dict:
    """{(model, engine, batch): [seconds per round]}, interleaved round by round."""
    times: dict = {}
    for bs, batch in batches.items():
        for call in engines.calls.values():
            call(batch)  # warm-up, untimed
        for _ in range(rounds):
            for key, call in engines.calls.items():
                t0 = time.perf_counter()
                call(batch)
                times.setdefault((*key, bs), []).append(time.perf_counter() - t0)
    return times


def measure_shape(shape: str, args, work: Path) -> dict:
    import torch

    from nash_core.export import load_exported

    models = build_models(shape, Path(args.standins), work)
    ct2_dirs = convert_all(models, work)
    torch_models, tok = {}, None
    for name, d in models.items():
        torch_models[name], tok = load_exported(d)
    src = sources(tok, max(args.batch_sizes))
    batches = {bs: src[:bs] for bs in args.batch_sizes}
    checks = {
        name: logprob_check(torch_models[name], ct2_dirs[(name, "float32")], src[0])
        for name in models
    }
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        engines = Engines(models, torch_models, ct2_dirs, tok, threads)
        times = time_cells(engines, batches, args.rounds)
        del engines
        for (name, engine, bs), secs in times.items():
            base = statistics.median(times[("teacher", "pytorch-fp32", bs)])
            med = statistics.median(secs)
            rows.append(
                {
                    "shape": shape,
                    "model": name,
                    "engine": engine,
                    "threads": threads,
                    "batch_size": bs,
                    "median_ms": round(med * 1000, 1),
                    "min_ms": round(min(secs) * 1000, 1),
                    "rounds": len(secs),
                    "speedup_vs_teacher_pytorch_fp32": round(base / med, 2),
                }
            )
            print(_line(rows[-1]), flush=True)
    return {"shape": shape, "fp32_logprob_max_abs_diff": checks, "rows": rows}


def measure_or_report(shape: str, args, work: Path) -> dict:
    """:func:`measure_shape`, or the reason CTranslate2 could not express one of its models
    (the other shapes are still measured and the JSON still written)."""
    from nash_core.runtimes.base import NotExpressible

    try:
        return measure_shape(shape, args, work)
    except NotExpressible as exc:
        print(f"{shape}: {exc}", flush=True)
        return {"shape": shape, "not_expressible": str(exc), "rows": []}


def _line(r: dict) -> str:
    return (
        f"{r['shape']:<9} {r['model']:<7} {r['engine']:<12} thr {r['threads']} bs "
        f"{r['batch_size']:>2}  {r['median_ms']:>9.1f} ms  "
        f"{r['speedup_vs_teacher_pytorch_fp32']:>5.2f}x"
    )


def markdown(result: dict) -> str:
    lines = [
        "| shape | model | engine | threads | batch | median ms "
        "| speedup vs teacher PyTorch fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape in result["shapes"]:
        for r in sorted(
            shape["rows"], key=lambda r: (r["threads"], r["batch_size"], r["model"], r["engine"])
        ):
            lines.append(
                f"| {r['shape']} | {r['model']} | {r['engine']} | {r['threads']} | "
                f"{r['batch_size']} | {r['median_ms']:.1f} | "
                f"{r['speedup_vs_teacher_pytorch_fp32']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="t5-base,bart-base")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--standins", default="/tmp/standins")
    p.add_argument("--workdir", default="/tmp/runtime-table")
    p.add_argument("--json", default=str(REPO / "benchmarks/results/runtime_table.json"))
    args = p.parse_args(argv)
    args.threads = [int(x) for x in args.threads.split(",")]
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shutil

    from nash_core.benchmark import hardware_fingerprint

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_start = os.getloadavg()
    t0 = time.time()
    shapes = [measure_or_report(s, args, work) for s in args.shapes.split(",")]
    result = {
        "hardware": hardware_fingerprint("cpu", "float32"),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - t0, 1),
        "settings": {
            "source_length": SOURCE_LEN,
            "new_tokens": NEW_TOKENS,
            "nash": {"decoder_layers": K, "encoder_sparsity": SPARSITY},
            "rounds": args.rounds,
            "threads": args.threads,
            "batch_sizes": args.batch_sizes,
            "interleaved": True,
            "weights": "random (stand-ins)",
            "fp32_logprob_tolerance": TOLERANCE,
        },
        "shapes": shapes,
    }
    bad = {
        f"{s['shape']}/{m}": d
        for s in shapes
        for m, d in s.get("fp32_logprob_max_abs_diff", {}).items()
        if not d <= TOLERANCE
    }
    result["logprob_mismatches"] = bad
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    hw = result["hardware"]
    print("\n" + markdown(result))
    print(
        f"\nhardware: {hw['cpu_model']}, {hw['cpu_cores_logical']} logical cores, "
        f"{hw['memory_gb']} GB | torch {hw['torch_version']} | load average at start "
        f"{result['load_average_start']}, at end {result['load_average_end']}"
    )
    diffs = [s.get("fp32_logprob_max_abs_diff") for s in shapes]
    print(f"fp32 log-prob max |diff| vs PyTorch: {diffs}")
    print(f"JSON: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if bad or any("not_expressible" in s for s in shapes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
