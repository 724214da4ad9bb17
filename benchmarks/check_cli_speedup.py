"""Check that `nash benchmark` reports a speedup an independent measurement agrees with.

Builds a random t5-small-shaped teacher (6 + 6 layers) and a student that keeps 2 decoder
layers (the pruning engine's ``keep_decoder_layers``: layer_idx renumbered, config updated),
saves both with a tokenizer, then:
1. runs ``nash benchmark`` on them (fixed 64 new tokens, batch 1, interleaved);
2. times the same two dirs with plain transformers and ``time.perf_counter`` -- no nash_core
   timing code, models loaded with AutoModelForSeq2SeqLM, blocks ordered A B B A to cancel
   linear drift;
3. passes when the two speedups agree within --tolerance (default 20%) and the JSON holds every
   field the issue asks for. Prints both numbers; exit code 0 = pass, 1 = fail.

    python benchmarks/check_cli_speedup.py [--repeats 8] [--new-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from structural_speedup import build_full  # noqa: E402

from nash_cli.main import main as nash_main  # noqa: E402
from nash_core.base_model import build_demo_tokenizer  # noqa: E402
from nash_core.layer_selection import keep_decoder_layers, select_layers  # noqa: E402

RESULT_FIELDS = (
    "latency",
    "encoder",
    "decoder_median_ms",
    "new_tokens_per_sequence",
    "generated_tokens",
    "sequences_per_s",
    "tokens_per_s",
    "ms_per_token",
    "speedup",
    "cost_per_1k_requests",
    "cost_per_1m_tokens",
    "peak_rss_delta_mb",
)
LATENCY_FIELDS = ("median_ms", "p90_ms", "mean_ms", "min_ms")
MODEL_FIELDS = ("params", "weights_mb", "disk_mb", "dtype", "attn_implementation", "decoder_layers")
HARDWARE_FIELDS = (
    "cpu_model",
    "cpu_cores_logical",
    "torch_threads",
    "gpu_name",
    "gpu_driver",
    "torch_version",
    "transformers_version",
    "dtype",
    "attn_implementation",
)


def save_pair(root: Path) -> tuple[Path, Path]:
    tok_texts = ["anna and bob meet at the cafe on monday at noon ."] * 3
    teacher = build_full("t5-small")
    build_demo_tokenizer(tok_texts, root / "teacher")
    teacher.save_pretrained(str(root / "teacher"))
    student = keep_decoder_layers(
        teacher, select_layers(6, 2, "uniform")
    )  # in place: teacher is saved
    build_demo_tokenizer(tok_texts, root / "student")
    student.save_pretrained(str(root / "student"))
    return root / "teacher", root / "student"


def independent_speedup(
    teacher_dir: Path, student_dir: Path, new_tokens: int, source_length: int, repeats: int
) -> tuple[float, float, float]:
    """Median latency ratio with nothing from nash_core: plain generate + perf_counter."""
    models = {
        n: AutoModelForSeq2SeqLM.from_pretrained(str(d)).eval()
        for n, d in (("teacher", teacher_dir), ("student", student_dir))
    }
    gen = torch.Generator().manual_seed(123)
    ids = torch.randint(5, 32000, (1, source_length), generator=gen)

    def once(model) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                num_beams=1,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
            )
        return time.perf_counter() - t0

    for m in models.values():
        once(m)  # warm-up
    times = {"teacher": [], "student": []}
    half = max(1, repeats // 2)
    for name in ("teacher", "student", "student", "teacher"):  # A B B A
        times[name] += [once(models[name]) for _ in range(half)]
    t, s = statistics.median(times["teacher"]), statistics.median(times["student"])
    return t / s, t * 1000, s * 1000


def missing_fields(result: dict) -> list[str]:
    miss = [f"hardware.{k}" for k in HARDWARE_FIELDS if k not in result["hardware"]]
    for m in result["models"]:
        miss += [f"{m['name']}.{k}" for k in MODEL_FIELDS if m.get(k) is None]
        r = m["results"]["fixed"]["1"]
        miss += [f"{m['name']}.fixed.1.{k}" for k in RESULT_FIELDS if r.get(k) is None]
        miss += [
            f"{m['name']}.fixed.1.latency.{k}" for k in LATENCY_FIELDS if k not in r["latency"]
        ]
    return miss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="nash benchmark speedup vs an independent measurement")
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--source-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=0.20)
    p.add_argument("--json", default=None, help="keep the nash benchmark JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        teacher, student = save_pair(Path(tmp))
        out = Path(args.json) if args.json else Path(tmp) / "bench.json"
        rc = nash_main(
            [
                "benchmark",
                str(teacher),
                str(student),
                "--batch-sizes",
                "1",
                "--modes",
                "fixed",
                "--new-tokens",
                str(args.new_tokens),
                "--repeats",
                str(args.repeats),
                "--warmup",
                "2",
                "--source-length",
                str(args.source_length),
                "--device",
                "cpu",
                "--price-per-hour",
                "0.10",
                "--json",
                str(out),
            ]
        )
        if rc != 0:
            print(f"FAIL: nash benchmark exited {rc}")
            return 1
        result = json.loads(out.read_text())
        cli = result["models"][1]["results"]["fixed"]["1"]["speedup"]
        indep, t_ms, s_ms = independent_speedup(
            teacher, student, args.new_tokens, args.source_length, args.repeats
        )
    miss = missing_fields(result)
    rel = cli / indep - 1
    print(
        f"nash benchmark speedup (fixed {args.new_tokens} tokens, batch 1): {cli:.2f}x "
        f"(teacher {result['models'][0]['results']['fixed']['1']['latency']['median_ms']:.0f} ms, "
        f"student {result['models'][1]['results']['fixed']['1']['latency']['median_ms']:.0f} ms)"
    )
    print(f"independent measurement: {indep:.2f}x (teacher {t_ms:.0f} ms, student {s_ms:.0f} ms)")
    print(
        f"difference: {rel:+.1%} (tolerance {args.tolerance:.0%}); "
        f"missing JSON fields: {miss or 'none'}"
    )
    ok = abs(rel) <= args.tolerance and not miss
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
