"""What do hard-concrete masks cost per training step? (goal: <= 15% over plain fine-tuning)

Builds the demo teacher's shapes (T5 d_model 256, d_ff 1024, 4 heads x d_kv 64, 4 encoder +
6 decoder layers; random init, or ``--teacher DIR``), a NASH student keeping 2 decoder layers,
and times full optimizer steps (forward, backward, AdamW step, the hooks' after_step) of:

  plain     the student fine-tuned with the task loss only (the baseline);
  masked    + encoder head / FFN-unit masks and the Lagrangian (SparsityHook);
  masked+kd + the teacher forward and KD / hidden-state distillation (DistillHook) as in a stage.

Timing is INTERLEAVED: the three variants live in one process and every round runs one step of
each, in an order that rotates from round to round. On a shared or throttling machine the speed
drifts by 15-20% within minutes, which swamps a 15% difference when variants are timed one after
the other; interleaved, all three see the same drift, and the overhead is reported both as the
ratio of medians and as the median of the per-round ratios (masked / plain of the same round).
Peak memory (max RSS on CPU, max allocated on CUDA) is measured separately, each variant in its
own short subprocess. Prints a table and one JSON line.

    python benchmarks/prune_step_overhead.py [--batch 16] [--src 128] [--tgt 48] [--steps 10] \
        [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("plain", "masked", "masked+kd")


def build_teacher(args):
    from transformers import T5Config, T5ForConditionalGeneration

    from nash_core.loading import load_seq2seq

    if args.teacher:
        return load_seq2seq(args.teacher)[0]
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=args.vocab,
        d_model=256,
        d_ff=1024,
        d_kv=64,
        num_heads=4,
        num_layers=4,
        num_decoder_layers=6,
        dropout_rate=0.1,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(cfg)


def make_step(args, variant: str, teacher, device):
    """A closure running one optimizer step of ``variant`` on its own copy of the student."""
    import copy

    from nash_core.config import DistillConfig
    from nash_core.distill import DistillHook
    from nash_core.layer_selection import keep_decoder_layers, select_layers
    from nash_core.masks import MaskSet, plan_groups
    from nash_core.sparsity import Constraint, SparsityHook

    student = copy.deepcopy(teacher)
    keep_decoder_layers(student, select_layers(6, 2))
    hooks = []
    if variant != "plain":
        masks = MaskSet(plan_groups(student)).to(device).attach(student)
        hooks.append(
            SparsityHook(
                student,
                masks,
                [Constraint("encoder", ("encoder",), 0.0, 0.3)],
                warmup_steps=100,
                mask_lr=0.01,
                lagrangian_lr=0.01,
                epsilon=0.02,
            )
        )
    if variant == "masked+kd":
        hooks.append(DistillHook(teacher, student, DistillConfig(), device=device))
    groups = [g for h in hooks for g in h.param_groups(student)]
    opt = torch.optim.AdamW([{"params": list(student.parameters())}, *groups], lr=3e-5)
    wants_hidden = any(h.wants_hidden_states() for h in hooks)

    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(3, args.vocab, (args.batch, args.src), generator=g),
        "attention_mask": torch.ones(args.batch, args.src, dtype=torch.long),
        "labels": torch.randint(3, args.vocab, (args.batch, args.tgt), generator=g),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    student.train()

    def step(i):
        opt.zero_grad(set_to_none=True)
        out = student(**batch, output_hidden_states=wants_hidden)
        loss = out.loss
        for h in hooks:
            extra, _ = h.extra_loss(student, batch, out, i)
            loss = loss + extra
        loss.backward()
        opt.step()
        for h in hooks:
            h.after_step(i)

    return step


def time_interleaved(args) -> dict:
    """Median step times of all variants, timed round-robin in this process."""
    from nash_core.benchmark import device_sync, timed_rounds

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    teacher = build_teacher(args).to(device)
    fns = []
    for v in VARIANTS:
        step, calls = make_step(args, v, teacher, device), itertools.count()
        fns.append(lambda step=step, calls=calls: step(next(calls)))
    per_fn, _ = timed_rounds(
        fns, args.warmup, args.steps, sync=device_sync(device), desc="rounds", rotate=True
    )
    times = dict(zip(VARIANTS, per_fn))
    base = times["plain"]
    out = {}
    for v, ts in times.items():
        out[v] = {
            "median_ms": 1000 * statistics.median(ts),
            "min_ms": 1000 * min(ts),
            "paired_ratio": statistics.median(t / b for t, b in zip(ts, base)),
        }
    return out


def peak_memory(args) -> dict:
    """Peak memory of a few steps of ``args.variant`` alone (run in its own subprocess)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    teacher = build_teacher(args).to(device)
    step = make_step(args, args.variant, teacher, device)
    if args.variant != "masked+kd":
        del teacher
    for i in range(3):
        step(i)
    if device.type == "cuda":
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--src", type=int, default=128)
    p.add_argument("--tgt", type=int, default=48)
    p.add_argument("--vocab", type=int, default=600)
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of each variant)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--teacher", default=None, help="a trained teacher directory (default: random init)"
    )
    p.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(peak_memory(args)))
        return 0
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    # memory first: a child inherits its parent's max RSS across fork/exec, so the parent must
    # not have built any model yet
    peaks = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, *passthrough, "--variant", variant],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    results = time_interleaved(args)
    for variant in VARIANTS:
        results[variant].update(peaks[variant])
    base = results["plain"]["median_ms"]
    print(
        f"device={args.device} threads={args.threads} batch={args.batch} src={args.src} "
        f"tgt={args.tgt} "
        f"rounds={args.steps} torch={torch.__version__}"
    )
    print(
        f"{'variant':<10} {'median ms':>10} {'min ms':>8} {'vs plain':>9} "
        f"{'paired':>8} {'peak MB':>8}"
    )
    for v, r in results.items():
        print(
            f"{v:<10} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} "
            f"{r['median_ms'] / base - 1:>+9.1%} "
            f"{r['paired_ratio'] - 1:>+8.1%} {r['peak_mb']:>8.0f}"
        )
    overhead = results["masked"]["median_ms"] / base - 1
    paired = results["masked"]["paired_ratio"] - 1
    print(
        f"mask overhead {overhead:+.1%} (ratio of medians), {paired:+.1%} (median of per-round "
        f"ratios); goal <= +15%"
    )
    print(
        json.dumps(
            {
                "results": results,
                "mask_overhead": overhead,
                "mask_overhead_paired": paired,
                "threads": args.threads,
                "device": args.device,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
