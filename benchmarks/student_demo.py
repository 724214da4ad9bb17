"""How fast does a student learn? Train demo students under several settings, same teacher.

Each *variant* is a set of config overrides (as ``nash run --set``) plus one arm; the script
runs that arm exactly as the sweep does (every pruning stage, materialisation, the final
fine-tune) on one shared demo teacher, then scores the result on the test split with the
sweep's decoding protocol. It prints, per variant: training steps, seconds per phase, the
validation-loss curve (same steps for every variant), the final validation loss, test ROUGE-L
and exact match, the encoder sparsity reached, and ROUGE-L retention against the teacher.

    python benchmarks/student_demo.py --workdir /tmp/students \\
        --variant "base:" \\
        --variant "lr3e-3:pruning.stage.train.lr=3e-3;finetune.train.lr=3e-3" \\
        --arm '{"method": "nash", "decoder_layers": 2, "targets": [0.3]}' --json out.json

A variant is ``NAME:OVERRIDE;OVERRIDE;...``; an override ``arm={...}`` (JSON) replaces the arm
for that variant. The data, tokenizer and teacher live in ``--workdir`` and are built once
(the teacher with the config's fixed step count), so later runs with the same workdir compare
students only. Variants run one after another in one process with the same threads; read
seconds as comparable within one run only (the machine drifts between runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from nash_core.base_model import prepare_base
from nash_core.config import arm_config, check_decoder_layers, load_config
from nash_core.data import prepare_splits
from nash_core.prune import finetune_export, materialize_stage, run_stage
from nash_core.runtime import set_threads
from nash_core.steps import FinetuneJob, StageJob
from nash_core.teacher import quick_check, train_teacher


def parse_variant(text: str) -> tuple[str, list[str], dict | None]:
    name, _, rest = text.partition(":")
    overrides, arm = [], None
    for item in filter(None, (s.strip() for s in rest.split(";"))):
        if item.startswith("arm="):
            arm = json.loads(item[4:])
        elif item.startswith("finetune_seed="):  # the fine-tune's data order (default: seed)
            arm = {**(arm or {}), "_finetune_seed": int(item.split("=", 1)[1])}
        else:
            overrides.append(item)
    return name, overrides, arm


def run_variant(args, name: str, overrides: list[str], arm_dict: dict, prepared: dict) -> dict:
    cfg = load_config(args.config, args.set + overrides)
    finetune_seed = arm_dict.pop("_finetune_seed", cfg.experiment.seed)
    arm = arm_config(arm_dict)
    out = Path(args.workdir) / "students" / name
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    if args.keep:
        shutil.rmtree(out / "final", ignore_errors=True)
    curve: list[dict] = []
    last_train: dict[str, dict] = {}

    def record(phase: str):
        def cb(step: int, metrics: dict) -> None:
            if "train_loss" in metrics:
                last_train[phase] = {
                    k: round(v, 4) for k, v in metrics.items() if k.endswith("loss")
                }
            if "eval_val_loss" in metrics:
                curve.append(
                    {
                        "phase": phase,
                        "step": step,
                        "val_loss": metrics["eval_val_loss"],
                        **{
                            k.removeprefix("eval_"): v
                            for k, v in metrics.items()
                            if k.startswith("eval_sparsity_expected")
                        },
                    }
                )

        return cb

    common = {"splits_dir": prepared["splits"], "data": cfg.data, "seed": cfg.experiment.seed}
    timings, previous, prev_target = {}, None, 0.0
    t0 = time.perf_counter()
    for i, target in enumerate(arm.targets or [0.0]):
        t = time.perf_counter()
        done = out / f"stage{i + 1}" / "stage_meta.json"
        if args.keep and done.is_file():  # a stage shared with another variant (same settings)
            previous, prev_target = out / f"stage{i + 1}", target
            continue
        job = StageJob(
            teacher_dir=prepared["teacher"],
            init_dir=previous,
            arm=arm,
            stage=cfg.pruning.stage,
            prev_target=prev_target,
            target=target,
            out_dir=out / f"stage{i + 1}",
            **common,
        )
        previous = run_stage(job, callback=record(f"stage{i + 1}"))
        timings[f"stage{i + 1}_s"] = round(time.perf_counter() - t, 1)
        prev_target = target
    t = time.perf_counter()
    shutil.rmtree(out / "export", ignore_errors=True)
    export = materialize_stage(previous, out / "export")
    timings["materialize_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    job = FinetuneJob(
        export_dir=export,
        teacher_dir=prepared["teacher"],
        finetune=cfg.finetune,
        out_dir=out / "final",
        **{**common, "seed": finetune_seed},
    )
    final = finetune_export(job, callback=record("finetune"))
    timings["finetune_s"] = round(time.perf_counter() - t, 1)
    train_s = time.perf_counter() - t0
    t = time.perf_counter()
    quality = quick_check(final, prepared["splits"], cfg)
    timings["eval_s"] = round(time.perf_counter() - t, 1)
    nash = json.loads((Path(final) / "config.json").read_text()).get("nash", {})
    stage_steps = cfg.pruning.stage.train.max_steps * max(1, len(arm.targets))
    return {
        "variant": name,
        "arm": arm.label,
        "overrides": overrides,
        "steps": stage_steps + (cfg.finetune.train.max_steps if cfg.finetune.enabled else 0),
        "train_s": round(train_s, 1),
        **timings,
        "final_val_loss": round(curve[-1]["val_loss"], 4) if curve else None,
        "best_finetune_val_loss": round(
            min((c["val_loss"] for c in curve if c["phase"] == "finetune"), default=float("nan")), 4
        ),
        "test_rougeL": round(quality["rougeL"], 4),
        "retention": round(quality["rougeL"] / prepared["teacher_rougeL"], 4),
        "test_exact_match": round(quality["exact_match"], 4),
        "encoder_sparsity": round(float(nash.get("encoder_sparsity", 0.0)), 3),
        "last_train": last_train,
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--workdir", required=True)
    parser.add_argument(
        "--arm",
        default='{"method": "nash", "decoder_layers": 2, "targets": [0.3]}',
        help="default arm (JSON)",
    )
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:K=V;K=V")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override applied to every variant",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="reuse finished variant steps")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    if args.threads:  # the teacher's training sets the config's threads itself
        args.set = args.set + [f"experiment.torch_threads={args.threads}"]
    cfg = load_config(args.config, args.set)
    set_threads(cfg.experiment.torch_threads)
    work = Path(args.workdir)
    splits = prepare_splits(cfg.data, work / "data")
    base = prepare_base(
        cfg.model, splits, work / "models", data_cfg=cfg.data, seed=cfg.experiment.seed
    )
    check_decoder_layers(cfg, base.num_decoder_layers)
    t = time.perf_counter()
    teacher = train_teacher(cfg, splits, base, work / "teacher")
    teacher_s = time.perf_counter() - t
    cached = work / "teacher_quality.json"
    if not cached.is_file():
        cached.write_text(json.dumps(quick_check(teacher, splits, cfg)))
    tq = json.loads(cached.read_text())
    print(
        f"teacher: {teacher} ({teacher_s:.0f} s now), test ROUGE-L {tq['rougeL']:.4f}", flush=True
    )
    prepared = {"splits": splits, "teacher": teacher, "teacher_rougeL": tq["rougeL"]}

    results = []
    for text in args.variant or ["base:"]:
        name, overrides, arm = parse_variant(text)
        arm = {**json.loads(args.arm), **arm} if arm and "method" not in arm else arm
        r = run_variant(args, name, overrides, arm or json.loads(args.arm), prepared)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "curve"}), flush=True)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "teacher_rougeL": tq["rougeL"],
                        "torch": torch.__version__,
                        "threads": torch.get_num_threads(),
                        "results": results,
                    },
                    indent=1,
                )
                + "\n"
            )
    print("\nvariant | steps | train s | final val loss | test ROUGE-L | retention | enc sparsity")
    for r in results:
        print(
            f"{r['variant']} | {r['steps']} | {r['train_s']} | {r['final_val_loss']} | "
            f"{r['test_rougeL']} | {r['retention']} | {r['encoder_sparsity']}"
        )
    return results


if __name__ == "__main__":
    main()
