"""Rehearse a real recipe at its true shape, offline: every step, a handful of optimizer steps each.

    python benchmarks/rehearsal.py --shape t5-base [--device cpu|cuda] [--steps 3]

Writes the stand-in of the shape (``nash_core.standin``, random weights, a tokenizer trained on
the demo corpus) unless it exists, then runs the recipe's own sweep (``nash_cli.sweep.run_sweep``:
pre-check, teacher, every stage of every arm, materialisation, fine-tune, evaluation, benchmark,
selection, registry) on it in this process, with only ``model.base``, the data source (the demo
corpus) and the sizes changed: ``--steps`` optimizer steps per training step, small batches,
short sequences and few evaluation / benchmark examples on the CPU (the recipe's batch sizes and
lengths with ``--device cuda``). A sampler thread records, every 0.2 s, the process's RSS (and
CUDA's max allocated memory), the size of the workdir, and the wall time at which each training
step's curve file gets a new record. Reported per step (``runs/<kind>-<key>``, one at a time:
``experiment.task_runner=sequential``): wall seconds, seconds per optimizer step, peak memory,
size of its directory and of the largest training checkpoint it wrote; for the sweep: disk used
(peak and final, MLflow store included) against the pre-check's estimate; for each export: the
load time and the tokens of plain ``AutoModelForSeq2SeqLM.from_pretrained(dir,
trust_remote_code=True)`` in a fresh process. For the first NASH arm, its last stage's masks are
set to close exactly 30% of every encoder group (a few steps move them too little) and the
materialised export must generate, in a fresh process, the masked model's tokens.

Results: ``benchmarks/results/rehearsal_<shape>_<device>.json`` (and a printed table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RECIPES = {
    "t5-base": "configs/samsum-t5-base.yaml",
    "flan-t5-base": "configs/samsum-flan-t5-base.yaml",
    "mt5-base": "configs/xlsum-mt5-base.yaml",
    "bart-base": "configs/xsum-bart-base.yaml",
}
TRAIN_SECTIONS = ("teacher.train", "pruning.stage.train", "finetune.train")


def overrides_for(shape: str, base: Path, args) -> list[str]:
    """Only the model, the data source and the sizes change; the recipe's structure stays."""
    steps = args.steps
    train = {
        "max_steps": steps,
        "epochs": "null",
        "eval_every": steps,
        "eval_examples": args.eval_examples,
        "log_every": 1,
        "checkpoint_every": max(1, steps - 1),  # one training checkpoint per step, measured
    }
    if args.batch_size:
        train["batch_size"] = args.batch_size
    out = [
        f"model.base={base}",
        "data.kind=demo",
        f"data.demo.num_dialogues={args.dialogues}",
        f"data.max_samples={{validation: {args.eval_examples}, test: {args.test_examples}}}",
        "experiment.task_runner=sequential",
        f"experiment.device={args.device}",
        f"evaluation.num_examples={args.test_examples}",
        "evaluation.bootstrap_samples=100",
        "benchmark.num_inputs=2",
        "benchmark.warmup=0",
        "benchmark.repeats=1",
        "benchmark.fixed_new_tokens=8",
    ]
    if args.device == "cpu":
        out += [
            "experiment.torch_threads=1",
            f"data.max_source_length={args.source_len}",
            f"data.max_target_length={args.target_len}",
            "evaluation.max_new_tokens=16",
            "evaluation.min_new_tokens=0",
            "evaluation.batch_size=4",
            "benchmark.dtype=float32",
            "benchmark.price_per_hour=0",
            "benchmark.hardware_name=cpu",
        ]
    for section in TRAIN_SECTIONS:
        out += [f"{section}.{k}={v}" for k, v in train.items()]
    if getattr(args, "one_nash_arm", False):
        out.append(f"pruning.arms=[{first_nash_arm(shape)}]")
    return out + list(getattr(args, "set", None) or [])


def first_nash_arm(shape: str) -> str:
    """The recipe's first NASH arm, as a flow-style YAML mapping for ``pruning.arms``."""
    from nash_core.config import load_config

    arms = load_config(REPO / RECIPES[shape]).pruning.arms
    arm = next(a for a in arms if a.method == "nash")
    return json.dumps(arm.model_dump(mode="json", exclude_defaults=True) | {"method": "nash"})


class Sampler(threading.Thread):
    """RSS / CUDA memory / workdir size and curve-record times, every ``period`` seconds."""

    def __init__(self, workdir: Path, period: float = 0.2):
        super().__init__(daemon=True)
        self.workdir, self.period = workdir, period
        self.samples: list[tuple[float, int, int]] = []  # (t, rss, cuda max allocated)
        self.disk: list[tuple[float, int]] = []
        self.curve_times: dict[str, dict[int, float]] = {}  # curve file -> step -> first seen
        self.checkpoints: dict[str, int] = {}  # run dir -> largest checkpoint/ size seen
        self._halt = threading.Event()
        self.known: set[str] = set()
        self.cuda = False

    def stop(self):
        self._halt.set()
        self.join()

    def run(self):
        import psutil
        import torch

        proc = psutil.Process()
        cuda = self.cuda = torch.cuda.is_available()
        n = 0
        while not self._halt.is_set():
            t = time.time()
            peak = torch.cuda.max_memory_allocated() if cuda else 0
            self.samples.append((t, proc.memory_info().rss, peak))
            if n % 5 == 0:  # every second: the file-system walk
                self._scan(t)
            n += 1
            self._halt.wait(self.period)
        self._scan(time.time())

    def _scan(self, t: float):
        runs = self.workdir / "runs"
        total = dir_size(self.workdir)
        self.disk.append((t, total))
        if not runs.is_dir():
            return
        for rdir in runs.iterdir():
            if rdir.name not in self.known:  # a new step began: CUDA's peak is per step
                self.known.add(rdir.name)
                if self.cuda:
                    import torch

                    torch.cuda.reset_peak_memory_stats()
            for curve in rdir.glob("*.jsonl"):
                self._scan_curve(curve, t)
            for ck in rdir.rglob("checkpoint"):
                if ck.is_dir():
                    size = dir_size(ck)
                    if size > self.checkpoints.get(rdir.name, 0):
                        self.checkpoints[rdir.name] = size

    def _scan_curve(self, curve: Path, t: float):
        """Stamp each training step of a JSONL curve with the time it was first seen."""
        seen = self.curve_times.setdefault(str(curve), {})
        try:
            lines = curve.read_text().splitlines()
        except OSError:
            return
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "train_loss" in rec and rec["step"] not in seen:
                seen[rec["step"]] = t


def dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def step_table(workdir: Path, sampler: Sampler, cuda: bool) -> list[dict]:
    from tasks.cache import DONE

    rows = []
    for rdir in sorted((workdir / "runs").iterdir(), key=lambda p: (p / ".lock").stat().st_mtime):
        marker = rdir / DONE
        if not marker.is_file():
            continue
        done = json.loads(marker.read_text())
        start = (rdir / ".lock").stat().st_mtime
        end = start + done["seconds"]
        window = [s for s in sampler.samples if start <= s[0] <= end + 0.2]
        row = {
            "step": rdir.name.split("-")[0],
            "dir": rdir.name,
            "seconds": done["seconds"],
            "peak_rss_gib": round(max((s[1] for s in window), default=0) / 1024**3, 2),
            "dir_mib": round(dir_size(rdir) / 1024**2, 1),
        }
        if cuda:
            row["peak_cuda_gib"] = round(max((s[2] for s in window), default=0) / 1024**3, 2)
        if rdir.name in sampler.checkpoints:
            row["checkpoint_mib"] = round(sampler.checkpoints[rdir.name] / 1024**2, 1)
        for curve in rdir.glob("*.jsonl"):
            times = sampler.curve_times.get(str(curve), {})
            if len(times) >= 2:
                steps = sorted(times)
                row["s_per_step"] = round(
                    (times[steps[-1]] - times[steps[0]]) / (steps[-1] - steps[0]), 2
                )
                row["steps"] = steps[-1]
        meta = done.get("meta", {})
        row["model_dir"] = meta.get("model_dir")
        row["label"] = _label(row["model_dir"])
        rows.append(row)
    return rows


def _label(model_dir: str | None) -> str:
    """``arm@target`` of a stage / export / fine-tuned model directory, else ''."""
    if not model_dir:
        return ""
    for name in ("stage_meta.json", "config.json"):
        f = Path(model_dir) / name
        if f.is_file():
            meta = json.loads(f.read_text())
            meta = meta.get("nash", {}) if name == "config.json" else meta
            if "arm" in meta:
                target = meta.get("target")
                return meta["arm"] if target in (None, 0, 0.0) else f"{meta['arm']}@{target}"
    return ""


def export_checks(rows: list[dict], texts: list[str]) -> list[dict]:
    """Fresh-process load (plain transformers) of every materialised / fine-tuned export."""
    from nash_core.standin import fresh_process_generate

    out = []
    for row in rows:
        if row["step"] not in ("export", "finetune") or not row.get("model_dir"):
            continue
        res = fresh_process_generate(row["model_dir"], texts)
        out.append({"dir": row["dir"], "class": res["class"], "load_s": round(res["load_s"], 2)})
        row["export_load_s"] = round(res["load_s"], 2)
    return out


def masked_vs_export(rows: list[dict], texts: list[str], scratch: Path) -> dict | None:
    """The first NASH arm's last stage at encoder sparsity 0.3: export == masked model."""
    import shutil

    from nash_core.io import read_json
    from nash_core.prune import STAGE_META, materialize_stage
    from nash_core.standin import (
        force_stage_sparsity,
        fresh_process_generate,
        generate_tokens,
        masked_model,
    )

    stages = []
    for row in rows:
        if row["step"] == "stage" and row.get("model_dir"):
            meta = read_json(Path(row["model_dir"]) / STAGE_META)
            if meta["method"] == "nash":
                stages.append((meta, row["model_dir"]))
    if not stages:
        return None
    first_arm = stages[0][0]["arm"]
    meta, stage_dir = [s for s in stages if s[0]["arm"] == first_arm][-1]
    copy = scratch / "stage"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(stage_dir, copy)
    force_stage_sparsity(copy, 0.3)
    model, tok = masked_model(copy)
    expected = generate_tokens(model, tok, texts)
    del model
    export = materialize_stage(copy, scratch / "export")
    nash = read_json(export / "config.json")["nash"]
    fresh = fresh_process_generate(export, texts)
    result = {
        "arm": first_arm,
        "decoder_layers_kept": nash["decoder_layers_kept"],
        "encoder_sparsity": round(nash["encoder_sparsity"], 4),
        "export_class": fresh["class"],
        "load_s": round(fresh["load_s"], 2),
        "same_tokens": fresh["tokens"] == expected,
    }
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def fingerprint(device: str) -> dict:
    import tokenizers
    import torch
    import transformers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", required=True, choices=sorted(RECIPES))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per training step")
    p.add_argument("--batch-size", type=int, help="default: 2 on cpu, the recipe's on cuda")
    p.add_argument("--source-len", type=int, default=128, help="cpu only (cuda: the recipe's)")
    p.add_argument("--target-len", type=int, default=32, help="cpu only (cuda: the recipe's)")
    p.add_argument("--dialogues", type=int, default=600)
    p.add_argument("--eval-examples", type=int, default=4)
    p.add_argument("--test-examples", type=int, default=8)
    p.add_argument("--standins", default="/tmp/standins")
    p.add_argument("--workdir", help="default /tmp/rehearsal/<shape>-<device> (emptied first)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--keep", action="store_true", help="keep the workdir afterwards")
    p.add_argument("--one-nash-arm", action="store_true", help="only the recipe's first NASH arm")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="more overrides, applied last"
    )
    args = p.parse_args(argv)
    if args.batch_size is None and args.device == "cpu":
        args.batch_size = 2
    for k, v in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "NASH_NO_PROGRESS": "1",
        "DO_NOT_TRACK": "1",
    }.items():
        os.environ.setdefault(k, v)
    import shutil

    import torch

    if args.device == "cpu":
        torch.set_num_threads(1)
    workdir = Path(args.workdir or f"/tmp/rehearsal/{args.shape}-{args.device}")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    os.environ["PREFECT_HOME"] = str(workdir / "prefect")

    from nash_core.standin import write_standin

    base = Path(args.standins) / args.shape
    t0 = time.time()
    if not (base / "config.json").is_file():
        write_standin(args.shape, base)
    standin_s = round(time.time() - t0, 1)

    from transformers import AutoConfig

    from nash_cli.sweep import run_sweep
    from nash_core.config import load_config
    from nash_core.data import read_split
    from tasks.preflight import (
        COPIES_PER_CANDIDATE,
        FIXED_COPIES,
        fp32_model_bytes,
        num_candidates,
    )

    recipe = REPO / RECIPES[args.shape]
    overrides = overrides_for(args.shape, base, args)
    cfg = load_config(recipe, overrides)
    model_bytes = fp32_model_bytes(AutoConfig.from_pretrained(base), base)
    estimate = model_bytes * (FIXED_COPIES + COPIES_PER_CANDIDATE * num_candidates(cfg))

    sampler = Sampler(workdir)
    sampler.start()
    t0 = time.time()
    error = None
    try:
        summary = run_sweep(str(recipe), overrides, str(workdir))
    except Exception as exc:  # noqa: BLE001 (report what ran before the failure)
        error, summary = f"{type(exc).__name__}: {exc}", {}
    sweep_s = round(time.time() - t0, 1)
    sampler.stop()

    cuda = args.device == "cuda"
    raw = {  # the sampler's data, kept even if a check below fails
        "samples": sampler.samples,
        "disk": sampler.disk,
        "curve_times": sampler.curve_times,
        "checkpoints": sampler.checkpoints,
    }
    (workdir / "sampler.json").write_text(json.dumps(raw))
    rows = step_table(workdir, sampler, cuda)
    data_dirs = sorted((workdir / "data").glob("*/test.jsonl"))
    texts = [
        cfg.data.source_prefix + r["source"] for r in read_split(data_dirs[0].parent, "test", 2)
    ]
    exports, check = [], None
    if error is None:
        try:
            exports = export_checks(rows, texts)
            check = masked_vs_export(rows, texts, workdir / "masked-check")
        except Exception as exc:  # noqa: BLE001 (the measurements are still written)
            error = f"check failed: {type(exc).__name__}: {str(exc)[-2000:]}"
    result = {
        "shape": args.shape,
        "recipe": RECIPES[args.shape],
        "overrides": overrides,
        "hardware": fingerprint(args.device),
        "standin_write_s": standin_s,
        "sweep_s": sweep_s,
        "error": error,
        "champion": summary.get("champion") if isinstance(summary, dict) else None,
        "model_fp32_mib": round(model_bytes / 1024**2, 1),
        "candidates": num_candidates(cfg),
        "disk_estimate_gib": round(estimate / 1024**3, 2),
        "disk_peak_gib": round(max((d[1] for d in sampler.disk), default=0) / 1024**3, 2),
        "disk_final_gib": round(dir_size(workdir) / 1024**3, 2),
        "peak_rss_gib": round(max((s[1] for s in sampler.samples), default=0) / 1024**3, 2),
        "steps": rows,
        "exports": exports,
        "masked_vs_export": check,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"rehearsal_{args.shape}_{args.device}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print_table(result)
    print(f"\nwritten {path}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if error is None and (check is None or check["same_tokens"]) else 1


def print_table(result: dict) -> None:
    print(f"\n{result['shape']}: sweep {result['sweep_s']} s, error: {result['error']}")
    cols = ["step", "label", "seconds", "s_per_step", "peak_rss_gib", "checkpoint_mib", "dir_mib"]
    cols += ["export_load_s"]
    print(" | ".join(cols))
    for row in result["steps"]:
        print(" | ".join(str(row.get(c, "")) for c in cols))
    print(
        f"disk: peak {result['disk_peak_gib']} GiB, final {result['disk_final_gib']} GiB, "
        f"pre-check estimate {result['disk_estimate_gib']} GiB; peak RSS "
        f"{result['peak_rss_gib']} GiB"
    )
    print(f"masked vs export: {result['masked_vs_export']}")


def markdown(result: dict) -> str:
    """The README table of one result: one row per step kind (mean over its runs)."""
    kinds: dict[str, list[dict]] = {}
    for row in result["steps"]:
        kinds.setdefault(row["step"], []).append(row)
    lines = [
        (
            "| step | runs | wall s (mean) | s / optimizer step | peak RSS GiB | checkpoint MiB "
            "| output MiB | export load s |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def mean(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return f"{sum(vals) / len(vals):.1f}" if vals else ""

    def peak(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return f"{max(vals):.2f}" if vals else ""

    for kind, rows in kinds.items():
        lines.append(
            f"| {kind} | {len(rows)} | {mean(rows, 'seconds')} | {mean(rows, 's_per_step')} | "
            f"{peak(rows, 'peak_rss_gib')} | {mean(rows, 'checkpoint_mib')} | "
            f"{mean(rows, 'dir_mib')} | {mean(rows, 'export_load_s')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--markdown":  # tables from saved results
        for f in sys.argv[2:]:
            print(markdown(json.loads(Path(f).read_text())) + "\n")
        raise SystemExit(0)
    raise SystemExit(main())
