"""The GPU check in one call: what a machine with an NVIDIA GPU must show, in at most 10 minutes.

    python benchmarks/gpu_check.py                 # on the GPU machine (writes benchmarks/results/)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry   # on a CPU, tiny shapes

Parts, each timed and checked (a part that raises is an error, not a crash of the whole check):

1. **structural**: ``benchmarks/structural_speedup.py`` on the t5-base shape (random weights):
   the stock model against NASH k=3 with encoder sparsity 0.3, PyTorch fp32 and bf16, batch 1
   and 8, 128-token source, 64 forced new tokens, interleaved. Checked: every row measured.
2. **ctranslate2**: the t5-base stand-in (``scripts/standin.py``) and its NASH export (k=3,
   encoder sparsity 0.3, built as ``benchmarks/runtime_table.py`` does) converted to
   CTranslate2 (``nash_core.runtimes.ct2``, conversion check at 1e-4 on the CPU), their fp32
   log-probabilities on the device against PyTorch's (checked, 1e-3 on CUDA), and latency of
   CT2 fp32 / fp16 / int8_float16 against the teacher in PyTorch fp32 on the device, batch 1
   and 8, 32 forced new tokens; skipped, with the reason, where ctranslate2 lacks the device.
3. **rehearsal**: ``benchmarks/rehearsal.py --shape t5-base --device cuda --steps 3
   --one-nash-arm``: the recipe (configs/samsum-t5-base.yaml) with its batch size and lengths,
   training under bf16 autocast, three optimizer steps per training step of the teacher, each
   stage of the first NASH arm and its fine-tune; then every export reloaded with plain
   transformers in a fresh process, and the materialised export's tokens checked against the
   masked model's.

``--dry-run`` does the same on the CPU at tiny shapes (64-wide models with the t5-base
vocabulary, 16-24-token sources, two optimizer steps, one stage) in a few minutes on 2 busy
cores: it proves the script starts and every part runs, not any number. Output:
``gpu_check.json`` and ``gpu_check.md`` in ``--out``; exit status 0 when every part passed (or
was skipped with a reason), 1 on any mismatch or error, 2 when there is no GPU and
``--dry-run`` was not given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

#: A 64-wide T5 for the dry run's structural part (the t5-base vocabulary, few layers).
TINY_T5 = dict(
    d_model=64,
    d_ff=128,
    num_heads=4,
    d_kv=16,
    num_layers=2,
    num_decoder_layers=4,
    vocab_size=32128,
    feed_forward_proj="relu",
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
)
#: The dry run's stand-in: the t5-base stand-in narrowed (its tokenizer and vocabulary kept).
TINY_STANDIN = dict(d_model=64, d_ff=128, num_heads=4, d_kv=16)


def plan(dry_run: bool) -> dict:
    """Shapes and sizes of every part: the real ones, or the dry run's tiny ones."""
    if dry_run:
        return {
            "device": "cpu",
            "arch": "t5-tiny",
            "dtypes": "float32,bfloat16",
            "batch_sizes": [1, 8],
            "source_length": 16,
            "new_tokens": 4,
            "repeats": 1,
            "warmup": 0,
            "ct2_types": ["float32", "int8"],
            "rehearsal": [
                "--device=cpu",
                "--steps=2",
                "--source-len=24",
                "--target-len=12",
                "--dialogues=200",
                "--eval-examples=2",
                "--test-examples=4",
                "--set=pruning.arms=[{method: nash, decoder_layers: 3, targets: [0.3]}]",
                "--set=evaluation.num_beams=1",
                "--set=benchmark.batch_sizes=[1]",
            ],
        }
    return {
        "device": "cuda",
        "arch": "t5-base",
        "dtypes": "float32,bfloat16",
        "batch_sizes": [1, 8],
        "source_length": 128,
        "new_tokens": 64,
        "repeats": 10,
        "warmup": 2,
        "ct2_types": ["float32", "float16", "int8_float16"],
        "rehearsal": ["--device=cuda", "--steps=3"],
    }


def part_structural(p: dict, out: dict) -> str:
    import structural_speedup as ss
    from transformers import T5Config, T5ForConditionalGeneration

    ss.ARCHS.setdefault("t5-tiny", (T5Config, T5ForConditionalGeneration, TINY_T5))
    args = argparse.Namespace(
        device=p["device"],
        dtypes=p["dtypes"],
        models=[p["arch"]],
        k=[3],
        sparsity=[0.3],
        batch_sizes=p["batch_sizes"],
        new_tokens=p["new_tokens"],
        source_length=p["source_length"],
        repeats=p["repeats"],
        warmup=p["warmup"],
        memory=p["device"] == "cuda",
        hardware_name=None,
    )
    res = ss.run(args)
    out.update(rows=res["rows"], hardware=res["hardware"], settings=res["settings"])
    want = len(p["dtypes"].split(",")) * len(p["batch_sizes"])
    bad = [r for r in res["rows"] if not (math.isfinite(r["speedup"]) and r["p50_ms"] > 0)]
    if len(res["rows"]) != want or bad:
        return f"mismatch: {len(res['rows'])} rows of {want}, {len(bad)} without a latency"
    return "ok"


def part_ctranslate2(p: dict, out: dict, work: Path) -> str:
    """Teacher and NASH export (k=3, encoder sparsity 0.3) of the t5-base stand-in converted to
    CTranslate2; fp32 log-probabilities on the device against PyTorch's; latency per compute
    type against the teacher in PyTorch fp32 on the same device."""
    try:
        import ctranslate2
    except ImportError:
        return "skipped: ctranslate2 is not installed (pip install ctranslate2)"
    from nash_core.runtimes.ct2 import supported_compute_types

    have = supported_compute_types(p["device"])
    if not have:
        return f"skipped: ctranslate2 {ctranslate2.__version__} has no {p['device']} support"
    import runtime_table as rt

    from nash_core.export import load_exported
    from nash_core.runtimes.ct2 import CT2Generator, convert, torch_log_probs

    models = rt.build_models("t5-base", work / "standins", work / "ct2")
    tolerance = 1e-4 if p["device"] == "cpu" else 1e-3
    out.update(tolerance=tolerance, logprob_max_abs_diff={}, rows=[], compute_types=sorted(have))
    types = [t for t in p["ct2_types"] if t in have]
    bad = []
    for name, src_dir in models.items():
        ct2_dir = convert(src_dir, work / "ct2" / f"{name}.ct2", "float32", tolerance=1e-4)
        model, tok = load_exported(src_dir)
        src = rt.sources(tok, max(p["batch_sizes"]))
        tgt = src[0][1 : rt.NEW_TOKENS + 1]
        ref = torch_log_probs(model, src[0], tgt)
        gen = CT2Generator(ct2_dir, device=p["device"], compute_type="float32")
        got = gen.log_probs(src[0], tgt)
        diff = max(abs(a - b) for a, b in zip(got, ref)) if len(got) == len(ref) else 1e9
        out["logprob_max_abs_diff"][name] = diff
        if not diff <= tolerance:
            bad.append(f"{name} fp32 log-probs differ by {diff:.2e}")
        gens = {t: CT2Generator(ct2_dir, device=p["device"], compute_type=t) for t in types}
        out["rows"] += _ct2_latency(name, model, tok, gens, src, p)
    _ct2_speedups(out["rows"])
    return "mismatch: " + "; ".join(bad) if bad else "ok"


def _ct2_latency(name: str, model, tok, gens: dict, src: list, p: dict) -> list[dict]:
    """Median seconds of PyTorch fp32 (on the device) and every CT2 compute type, interleaved."""
    import statistics

    import torch

    device = torch.device(p["device"])
    model = model.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opts = {"beam_size": 1, "max_decoding_length": 32, "min_decoding_length": 32}
    rows = []
    for bs in p["batch_sizes"]:
        ids = torch.tensor(src[:bs], device=device)
        tokens = [tok.convert_ids_to_tokens(r) for r in src[:bs]]
        calls = {
            "pytorch-float32": lambda: model.generate(
                input_ids=ids, max_new_tokens=32, min_new_tokens=32, do_sample=False, num_beams=1
            )
        }
        calls |= {
            f"ct2-{t}": (lambda g=g: g.translator.translate_batch(tokens, **opts))
            for t, g in gens.items()
        }
        times: dict[str, list[float]] = {k: [] for k in calls}
        for r in range(p["repeats"] + 1):
            for key, call in calls.items():
                sync()
                t0 = time.perf_counter()
                with torch.inference_mode():
                    call()
                sync()
                if r:  # round 0 warms up
                    times[key].append(time.perf_counter() - t0)
        for key, secs in times.items():
            rows.append(
                {
                    "model": name,
                    "engine": key,
                    "batch_size": bs,
                    "median_ms": round(statistics.median(secs) * 1000, 2),
                }
            )
    return rows


def _ct2_speedups(rows: list[dict]) -> None:
    base = {
        r["batch_size"]: r["median_ms"]
        for r in rows
        if r["model"] == "teacher" and r["engine"] == "pytorch-float32"
    }
    for r in rows:
        r["speedup_vs_teacher_pytorch_fp32"] = round(base[r["batch_size"]] / r["median_ms"], 2)


def part_rehearsal(p: dict, out: dict, work: Path, results: Path, budget_s: float) -> str:
    standins = work / "standins"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "rehearsal.py"),
        "--shape=t5-base",
        "--one-nash-arm",
        f"--standins={standins}",
        f"--workdir={work / 'rehearsal'}",
        f"--out={results}",
        *p["rehearsal"],
    ]
    out["command"] = " ".join(cmd[1:])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60, budget_s))
    out["returncode"] = res.returncode
    path = results / f"rehearsal_t5-base_{p['device']}.json"
    if not path.is_file():
        out["tail"] = (res.stdout + res.stderr)[-3000:]
        return f"error: rehearsal exited {res.returncode} without a result"
    rep = json.loads(path.read_text())
    out["result_file"] = path.name
    out["steps"] = [
        {k: r.get(k) for k in ("dir", "seconds", "s_per_step", "peak_rss_gib", "peak_cuda_gib")}
        for r in rep["steps"]
    ]
    out["exports"] = rep["exports"]
    out["masked_vs_export"] = rep["masked_vs_export"]
    out["sweep_s"], out["error"] = rep["sweep_s"], rep["error"]
    check = rep["masked_vs_export"] or {}
    if rep["error"] or res.returncode:
        out["tail"] = (res.stdout + res.stderr)[-3000:]
        return f"error: {rep['error'] or f'rehearsal exited {res.returncode}'}"
    if not check.get("same_tokens") or not rep["exports"]:
        return "mismatch: the reloaded export's tokens differ from the masked model's"
    return "ok"


def markdown(result: dict) -> str:
    lines = [f"GPU check ({'dry run, CPU' if result['dry_run'] else 'CUDA'}): {result['verdict']}"]
    lines += ["", "| part | status | seconds |", "| --- | --- | --- |"]
    for name, part in result["parts"].items():
        lines.append(f"| {name} | {part['status']} | {part['seconds']} |")
    rows = result["parts"]["structural"].get("rows", [])
    if rows:
        lines += [
            "",
            "| arch | dtype | k | enc. sparsity | batch | baseline p50 ms | NASH p50 ms "
            "| speedup |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r['arch']} | {r['dtype']} | {r['decoder_layers']}/"
                f"{r['decoder_layers_full']} | {r['encoder_sparsity']:.3f} | {r['batch_size']} | "
                f"{r['baseline_p50_ms']:.1f} | {r['p50_ms']:.1f} | {r['speedup']:.2f}x |"
            )
    ct2 = result["parts"]["ctranslate2"]
    if ct2.get("rows"):
        lines += [
            "",
            f"CTranslate2 fp32 log-probs vs PyTorch, max |diff|: {ct2['logprob_max_abs_diff']}",
            "",
            "| model | engine | batch | median ms | speedup vs teacher PyTorch fp32 |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in ct2["rows"]:
            lines.append(
                f"| {r['model']} | {r['engine']} | {r['batch_size']} | {r['median_ms']} | "
                f"{r['speedup_vs_teacher_pytorch_fp32']:.2f}x |"
            )
    reh = result["parts"]["rehearsal"]
    if reh.get("steps"):
        lines += [
            "",
            "| rehearsal step | seconds | s / step | peak CUDA GiB |",
            "| --- | --- | --- | --- |",
        ]
        for s in reh["steps"]:
            lines.append(
                f"| {s['dir']} | {s['seconds']} | {s.get('s_per_step') or ''} | "
                f"{s.get('peak_cuda_gib') or ''} |"
            )
        lines.append(f"\nmasked model vs reloaded export: {reh.get('masked_vs_export')}")
    hw = result["hardware"]
    lines.append(
        f"\nhardware: {hw.get('gpu_name') or hw.get('cpu_model')} | driver {hw.get('gpu_driver')} "
        f"| CUDA {hw.get('cuda_version')} | torch {hw.get('torch_version')} | load avg "
        f"{hw.get('load_average_1m')}"
    )
    return "\n".join(lines) + "\n"


def write_t5_standin(p: dict, work: Path) -> None:
    """The t5-base stand-in both later parts use (the dry run's: narrow, 4 + 4 layers)."""
    from nash_core.standin import write_standin

    if p["device"] != "cpu":
        write_standin("t5-base", work / "standins" / "t5-base")
        return
    write_standin(
        "t5-base",
        work / "standins" / "t5-base",
        encoder_layers=4,  # transformers 5 sizes T5's generation cache by the encoder depth
        decoder_layers=4,
        num_dialogues=200,
        overrides=TINY_STANDIN,
    )


def run_parts(p: dict, work: Path, results: Path, budget_s: float) -> dict:
    start = time.monotonic()
    parts: dict[str, dict] = {}
    write_t5_standin(p, work)
    steps = {
        "structural": lambda o: part_structural(p, o),
        "ctranslate2": lambda o: part_ctranslate2(p, o, work),
        "rehearsal": lambda o: part_rehearsal(
            p, o, work, results, budget_s - (time.monotonic() - start)
        ),
    }
    for name, fn in steps.items():
        t0, out = time.monotonic(), {}
        try:
            status = fn(out)
        except Exception as exc:  # noqa: BLE001 (the other parts still run and are reported)
            status = f"error: {type(exc).__name__}: {str(exc)[-1500:]}"
        out["status"], out["seconds"] = status, round(time.monotonic() - t0, 1)
        parts[name] = out
        print(f"[gpu_check] {name}: {status} ({out['seconds']} s)", flush=True)
    return parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: proves it starts")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument(
        "--budget-s",
        type=float,
        help="the whole check's time limit (the rehearsal gets what is left): default 600 on "
        "a GPU, 2400 for --dry-run (a busy 2-core CPU)",
    )
    args = ap.parse_args(argv)
    for k, v in {"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
        os.environ.setdefault(k, v)
    import torch

    from nash_core.benchmark import hardware_fingerprint

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run on a CPU", file=sys.stderr)
        return 2
    p = plan(args.dry_run)
    budget = args.budget_s or (2400 if args.dry_run else 600)
    if args.dry_run:
        torch.set_num_threads(1)
    results = Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        parts = run_parts(p, Path(tmp), results, budget)
    failed = [n for n, part in parts.items() if not part["status"].startswith(("ok", "skipped"))]
    result = {
        "dry_run": args.dry_run,
        "verdict": "FAILED: " + ", ".join(failed) if failed else "passed",
        "seconds": round(time.monotonic() - t0, 1),
        "hardware": hardware_fingerprint(p["device"], p["dtypes"], "sdpa"),
        "plan": p,
        "parts": parts,
    }
    for name, text in (
        ("gpu_check.json", json.dumps(result, indent=1, default=str) + "\n"),
        ("gpu_check.md", markdown(result)),
    ):
        tmp_file = results / f".{name}.tmp"
        tmp_file.write_text(text, encoding="utf-8")
        tmp_file.replace(results / name)
    print(markdown(result))
    print(f"written {results / 'gpu_check.json'} and gpu_check.md")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
