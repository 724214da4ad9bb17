"""Structural speedup of NASH-shaped models on real architecture shapes (random weights).

What it answers: on THIS hardware, how much faster does a t5-small / t5-base / bart-base get
when the decoder keeps k layers and the encoder loses a fraction s of its heads and FFN units?
Speed depends on shapes, not on weight values, so random weights give the real latency without
downloading anything. Output quality is NOT measured here (see `nash run`).

How candidates are built (the pruning engine's own code, not a re-implementation):
- decoder depth: ``layer_selection.select_layers(L, k, "uniform")`` +
  ``layer_selection.keep_decoder_layers`` (renumbers the KV-cache slots, moves T5's table);
- encoder sparsity s: every encoder layer keeps its first round(H * (1 - s)) heads and
  round(d_ff * (1 - s)) FFN units, applied by ``modeling_nash.restructure`` -- the module
  surgery a pruned export runs at load time (for T5 it also switches to the exports' attention
  function that slices the position bias per layer). Real NASH masks are not uniform across
  layers; uniform shrinking gives the same parameter count and, layer widths being equal, about
  the same FLOPs. The achieved sparsity of the prunable encoder weights is reported.
The baseline is the stock model (all layers, s = 0). Each candidate is timed interleaved with a
fresh copy of the baseline (A B A B ...) in this process, in the fixed-length mode (exactly
--new-tokens new tokens, greedy), and speedup = baseline median / candidate median.

Examples:
    python benchmarks/structural_speedup.py --quick                 # 2-core laptop, ~1-2 min
    python benchmarks/structural_speedup.py --device cuda --dtypes float32,bfloat16 --json gpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nash_core.adapters import get_adapter  # noqa: E402
from nash_core.benchmark import (
    Candidate,
    benchmark_loaded,
    hardware_fingerprint,
    model_facts,
    peak_mb,  # noqa: E402
    random_inputs,
)
from nash_core.config import BenchmarkConfig, EvaluationConfig  # noqa: E402
from nash_core.export_modeling.modeling_nash import restructure  # noqa: E402
from nash_core.layer_selection import keep_decoder_layers, select_layers  # noqa: E402

#: Published shapes of the checkpoints (config.json of t5-small, t5-base, facebook/bart-base).
ARCHS: dict[str, tuple[type, type, dict]] = {
    "t5-small": (
        T5Config,
        T5ForConditionalGeneration,
        dict(
            d_model=512,
            d_ff=2048,
            num_heads=8,
            d_kv=64,
            num_layers=6,
            num_decoder_layers=6,
            vocab_size=32128,
            feed_forward_proj="relu",
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        ),
    ),
    "t5-base": (
        T5Config,
        T5ForConditionalGeneration,
        dict(
            d_model=768,
            d_ff=3072,
            num_heads=12,
            d_kv=64,
            num_layers=12,
            num_decoder_layers=12,
            vocab_size=32128,
            feed_forward_proj="relu",
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        ),
    ),
    "bart-base": (
        BartConfig,
        BartForConditionalGeneration,
        dict(
            d_model=768,
            encoder_ffn_dim=3072,
            decoder_ffn_dim=3072,
            encoder_attention_heads=12,
            decoder_attention_heads=12,
            encoder_layers=6,
            decoder_layers=6,
            vocab_size=50265,
            max_position_embeddings=1024,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=2,
        ),
    ),
}


#: Shapes built by ``nash_core.standin`` (the offline stand-ins): gated-GELU, untied head.
STANDIN_ARCHS = ("flan-t5-base", "mt5-base")


def build_full(arch: str, seed: int = 0) -> torch.nn.Module:
    if arch in STANDIN_ARCHS:
        from nash_core.standin import SHAPES, build_standin_model, standin_config

        untied = SHAPES[arch][1].get("tie_word_embeddings") is False
        return build_standin_model(standin_config(arch), untied_head=untied, seed=seed)
    cfg_cls, model_cls, kw = ARCHS[arch]
    torch.manual_seed(seed)
    return model_cls(cfg_cls(**kw)).eval()


def shrink_encoder(model: torch.nn.Module, sparsity: float) -> float:
    """Uniformly drop a fraction ``sparsity`` of every encoder layer's heads and FFN units
    (in place, through the export's ``restructure``); returns the achieved sparsity of the
    prunable encoder weights (q/k/v/o per head + FFN per unit)."""
    adapter = get_adapter(model)
    kept = total = 0
    shapes = {"family": adapter.family, "encoder": [], "decoder": []}
    for i, layer in enumerate(adapter.layers(model, "encoder")):
        attn, ffn = adapter.attention(layer, "encoder", i, "self"), adapter.ffn(layer, "encoder", i)
        heads = max(1, round(attn.num_heads * (1 - sparsity)))
        units = max(1, round(ffn.units * (1 - sparsity)))
        kept += heads * attn.params_per_head + units * ffn.params_per_unit
        total += attn.num_heads * attn.params_per_head + ffn.units * ffn.params_per_unit
        shapes["encoder"].append({"self": list(range(heads)), "ffn": units})
    for i, layer in enumerate(adapter.layers(model, "decoder")):
        spec = {
            kind: list(range(ref.num_heads))
            for kind in ("self", "cross")
            if (ref := adapter.attention(layer, "decoder", i, kind)) is not None
        }
        shapes["decoder"].append({**spec, "ffn": adapter.ffn(layer, "decoder", i).units})
    restructure(model, shapes)
    model.config.nash = {"family": adapter.family, "shapes": shapes}  # as materialize records
    return 1.0 - kept / total


def build_candidate(
    full: torch.nn.Module, k: int, sparsity: float
) -> tuple[torch.nn.Module, float]:
    model = copy.deepcopy(full)
    depth = len(get_adapter(model).layers(model, "decoder"))
    if k < depth:
        keep_decoder_layers(model, select_layers(depth, k, "uniform"))
    return model, shrink_encoder(model, sparsity)


def _parse_k(text: str) -> list[int | str]:
    return [x.strip() if x.strip() == "full" else int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(args) -> dict:
    device = torch.device(args.device)
    rows = []
    eval_cfg = EvaluationConfig(max_new_tokens=args.new_tokens)
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        bench = BenchmarkConfig(
            batch_sizes=args.batch_sizes,
            num_inputs=max(args.batch_sizes),
            warmup=args.warmup,
            repeats=args.repeats,
            fixed_new_tokens=args.new_tokens,
            dtype=dtype_name,
        )
        for arch in args.models:
            full = build_full(arch).to(device=device, dtype=dtype)
            depth = len(get_adapter(full).layers(full, "decoder"))
            inputs = random_inputs(bench.num_inputs, args.source_length, full.config.vocab_size)
            base_facts = model_facts(full)
            for k in args.k:
                k_val = depth if k == "full" else int(k)
                for s in args.sparsity:
                    if k_val == depth and s == 0:
                        continue  # the baseline itself
                    cand, achieved = build_candidate(full, k_val, s)
                    t0 = time.perf_counter()
                    res = benchmark_loaded(
                        [Candidate("baseline", full), Candidate("candidate", cand)],
                        [inputs, inputs],
                        bench,
                        eval_cfg,
                        device,
                        modes=("fixed",),
                        measure_memory=args.memory,
                    )
                    facts = model_facts(cand)
                    for bs in args.batch_sizes:
                        b, c = (
                            res[0]["results"]["fixed"][str(bs)],
                            res[1]["results"]["fixed"][str(bs)],
                        )
                        rows.append(
                            {
                                "arch": arch,
                                "dtype": dtype_name,
                                "decoder_layers": k_val,
                                "decoder_layers_full": depth,
                                "target_sparsity": s,
                                "encoder_sparsity": round(achieved, 4),
                                "batch_size": bs,
                                "params": facts["params"],
                                "params_full": base_facts["params"],
                                "p50_ms": c["latency"]["median_ms"],
                                "p90_ms": c["latency"]["p90_ms"],
                                "ms_per_token": c["ms_per_token"],
                                "encoder_ms": c["encoder"]["median_ms"],
                                "baseline_p50_ms": b["latency"]["median_ms"],
                                "baseline_encoder_ms": b["encoder"]["median_ms"],
                                "speedup": c["speedup"],
                                "tokens_per_s": c["tokens_per_s"],
                                "peak_mem_mb": peak_mb(c),
                            }
                        )
                        print(_line(rows[-1]), flush=True)
                    print(f"    ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
                    del cand
            del full
    return {
        "hardware": hardware_fingerprint(device, args.dtypes, "sdpa", args.hardware_name),
        "settings": {
            "new_tokens": args.new_tokens,
            "source_length": args.source_length,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "mode": "fixed, greedy",
            "interleaved_with_baseline": True,
            "weights": "random",
        },
        "rows": rows,
    }


HEADER = (
    f"{'arch':<9} {'dtype':<8} {'k':>4} {'s':>4} {'s_real':>6} {'bs':>3} {'params':>7} "
    f"{'p50 ms':>8} {'p90 ms':>8} {'ms/tok':>7} {'enc ms':>7} {'base ms':>8} {'speedup':>7}"
)


def _line(r: dict) -> str:
    k = f"{r['decoder_layers']}/{r['decoder_layers_full']}"
    return (
        f"{r['arch']:<9} {r['dtype']:<8} {k:>4} {r['target_sparsity']:>4.1f} "
        f"{r['encoder_sparsity']:>6.3f} {r['batch_size']:>3} {r['params'] / 1e6:>6.1f}M "
        f"{r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['ms_per_token']:>7.2f} "
        f"{r['encoder_ms']:>7.1f} "
        f"{r['baseline_p50_ms']:>8.1f} {r['speedup']:>6.2f}x"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        type=lambda t: t.split(","),
        default=list(ARCHS),
        help=f"comma list of {', '.join([*ARCHS, *STANDIN_ARCHS])}",
    )
    p.add_argument(
        "--k", type=_parse_k, default=[1, 2, 3, 4, "full"], help="decoder layers, e.g. 1,2,full"
    )
    p.add_argument(
        "--sparsity", type=_floats, default=[0.0, 0.3, 0.5], help="encoder sparsity list"
    )
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--source-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", default="float32", help="comma list: float32,bfloat16")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-memory call"
    )
    p.add_argument("--hardware-name", default=None)
    p.add_argument("--json", default=None, help="write rows + hardware here")
    p.add_argument(
        "--quick",
        action="store_true",
        help="t5-small, k 1,2,full, s 0,0.3, batch 1, 3 repeats, source 32 (small CPUs)",
    )
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in ARCHS and m not in STANDIN_ARCHS]
    if unknown:
        p.error(f"unknown --models {unknown}; choose from {[*ARCHS, *STANDIN_ARCHS]}")
    if args.quick:
        args.models, args.k, args.sparsity = ["t5-small"], [1, 2, "full"], [0.0, 0.3]
        args.batch_sizes, args.repeats, args.warmup, args.source_length = [1], 3, 1, 32
    if args.threads:
        torch.set_num_threads(args.threads)
    print(HEADER, flush=True)
    result = run(args)
    hw = result["hardware"]
    print(
        f"hardware: {hw['gpu_name'] or hw['cpu_model']} | {hw['device']} | "
        f"{hw['torch_threads']} torch "
        f"threads | load avg {hw['load_average_1m']} | torch {hw['torch_version']} | transformers "
        f"{hw['transformers_version']} | {args.new_tokens} new tokens, source {args.source_length}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
