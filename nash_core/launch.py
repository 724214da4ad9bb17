"""Run one training step (teacher, pruning stage, fine-tune) in this process or data-parallel.

:func:`run_step` is what the sweep's tasks call. With ``experiment.train_processes`` = 1 it runs
the step here; with N > 1 it starts

    python -m torch.distributed.run --standalone --nproc_per_node N -m nash_core.launch SPEC.json

(an argument list, no shell) and waits. SPEC.json holds the step name, the whole validated
config and the step's paths, so every rank rebuilds exactly the call a single process would
make. Each rank picks its GPU from ``LOCAL_RANK`` (NCCL) or runs on the CPU (gloo); the training
loop does the rest (:mod:`nash_core.distributed`). Rank 0 appends the training curve to a JSONL
file, which the launching process forwards to its ``callback`` while the step runs, so MLflow
curves stay live. Results are the same directories a single process writes.

This module imports neither Prefect nor MLflow: the callback is whatever the caller passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nash_core.config import NashConfig
from nash_core.errors import TrainingError
from nash_core.io import atomic_write_json
from nash_core.steps import (
    Callback,
    FinetuneArgs,
    FinetuneJob,
    StageArgs,
    StageJob,
    StepArgs,
    TeacherArgs,
    step_args,
)


# --------------------------------------------------------------------------- the steps
def _teacher(cfg: NashConfig, args: TeacherArgs, callback: Callback, device) -> Path:
    from nash_core.base_model import BaseInfo
    from nash_core.teacher import train_teacher

    return train_teacher(
        cfg, args.splits_dir, BaseInfo(**args.base_info), args.out_dir, callback=callback
    )


def _stage(cfg: NashConfig, args: StageArgs, callback: Callback, device) -> Path:
    from nash_core.prune import run_stage

    return run_stage(StageJob.of(cfg, args), callback=callback, device=device)


def _finetune(cfg: NashConfig, args: FinetuneArgs, callback: Callback, device) -> Path:
    from nash_core.prune import finetune_export

    return finetune_export(FinetuneJob.of(cfg, args), callback=callback, device=device)


#: step name -> runner(cfg, args, callback, device); ``args`` is the step's model in
#: :mod:`nash_core.steps` (JSON-serialisable, so torchrun ranks rebuild it from the spec).
STEPS = {"teacher": _teacher, "stage": _stage, "finetune": _finetune}


def run_step(
    step: str, cfg: NashConfig, args: StepArgs | dict, *, callback: Callback = None, device=None
) -> Path:
    """Run ``step`` with ``args`` (its :mod:`nash_core.steps` model, or that model as a dict);
    under torchrun when ``cfg.experiment.train_processes`` > 1."""
    args = step_args(step, args)
    if cfg.experiment.train_processes > 1:
        return run_torchrun(
            step,
            cfg,
            args,
            cfg.experiment.train_processes,
            callback=callback,
            work_dir=Path(args.out_dir).parent,
        )
    from nash_core.runtime import set_threads

    # torch's intra-op thread count is per OS thread (OpenMP): a step run by a task runner's
    # worker thread gets experiment.torch_threads here, whichever thread ran what before it
    set_threads(cfg.experiment.torch_threads)
    return STEPS[step](cfg, args, callback, device)


# --------------------------------------------------------------------------- launching
def torchrun_command(nproc: int, spec_path: str | Path) -> list[str]:
    """The torchrun command line for this interpreter (no reliance on PATH)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "nash_core.launch",
        str(spec_path),
    ]


def run_torchrun(
    step: str,
    cfg: NashConfig,
    args: StepArgs | dict,
    nproc: int,
    *,
    callback: Callback = None,
    work_dir: str | Path,
) -> Path:
    """Run ``step`` in ``nproc`` torchrun processes; return its result directory.

    ``work_dir`` receives ``<step>.launch.json`` (the spec), ``<step>.curve.jsonl`` and
    ``<step>.torchrun.log`` (every rank's output; its tail is in the error if a rank fails).
    """
    args = step_args(step, args)
    work_dir = Path(work_dir)
    spec = atomic_write_json(
        work_dir / f"{step}.launch.json",
        {
            "step": step,
            "config": cfg.model_dump(mode="json"),
            "args": args.model_dump(mode="json"),
            "curve": str(work_dir / f"{step}.curve.jsonl"),
            "result": None,
        },
    )
    curve = _CurveForwarder(work_dir / f"{step}.curve.jsonl", callback)
    log_path = work_dir / f"{step}.torchrun.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            torchrun_command(nproc, spec),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NASH_NO_PROGRESS": "1"},
        )
        try:
            while proc.poll() is None:
                curve.forward()
                time.sleep(1.0)
        except BaseException:  # Ctrl-C / a cancelled task: torchrun forwards SIGTERM to the
            proc.terminate()  # ranks, which checkpoint at their next step boundary
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    curve.forward()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise TrainingError(
            f"the data-parallel {step} step ({nproc} processes under torchrun) "
            f"exited with code {proc.returncode}; every rank's output is in "
            f"{log_path}. Its end:\n{tail}"
        )
    result = json.loads(Path(spec).read_text())["result"]
    return Path(result)


class _CurveForwarder:
    """Hands every complete line rank 0 appended to the curve file to ``callback``."""

    def __init__(self, path: Path, callback: Callback):
        self.path, self.callback, self.offset = path, callback, 0
        path.unlink(missing_ok=True)

    def forward(self) -> None:
        if self.callback is None or not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            record = json.loads(line)
            self.callback(record.pop("step"), record)


def _append_curve(path: str) -> Callable[[int, dict], None]:
    def write(step: int, metrics: dict) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **metrics}) + "\n")

    return write


# --------------------------------------------------------------------------- a rank
def main(argv: list[str] | None = None) -> int:
    """One torchrun rank: join the process group, run the step, rank 0 records the result."""
    import torch
    import torch.distributed as dist

    from nash_core.runtime import pick_device, set_threads

    spec_path = Path((argv if argv is not None else sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    cfg = NashConfig.model_validate(spec["config"])
    use_cuda = torch.cuda.is_available() and cfg.experiment.device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # "cuda" = this rank's GPU
    set_threads(cfg.experiment.torch_threads)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        main_rank = dist.get_rank() == 0
        device = pick_device(cfg.experiment.device)
        print(
            f"nash_core.launch: rank {dist.get_rank()}/{dist.get_world_size()} runs the "
            f"{spec['step']} step on {device}",
            flush=True,
        )
        out = STEPS[spec["step"]](
            cfg,
            step_args(spec["step"], spec["args"]),
            _append_curve(spec["curve"]) if main_rank else None,
            device,
        )
        if main_rank:
            atomic_write_json(spec_path, {**spec, "result": str(out)})
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
