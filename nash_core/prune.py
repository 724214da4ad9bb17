"""The stage runners: prune (one sparsity target), export, final fine-tune (method.md section 5).

One runner for every compression method: the method (:mod:`nash_core.methods`, looked up by
the name the arm or the stage directory records) says how the student starts, which hooks train
it, what the stage records and how it is exported; the runner does the rest the same way for
all of them. Each runner reads directories and writes one directory atomically, so the flow can
cache, retry and resume them:

- :func:`run_stage` trains a student with task loss, distillation and the method's hooks (NASH /
  CoFi: masks and the Lagrangian sparsity constraint; magnitude: weight masks on a cubic ramp).
  The first stage starts from the teacher; stage i continues from stage i-1 and ramps the
  target from the previous one. Output: the student (HF directory), the method's state (masks,
  multipliers) and ``stage_meta.json``.
- :func:`materialize_stage` exports a stage (structured: folds and slices the masks into a
  smaller model; magnitude: the dense weights with their zeros).
- :func:`finetune_export` trains the export a little more (task loss + optional KD, plus the
  method's fine-tune hooks: magnitude keeps its zeros).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from torch import nn

from nash_core.config import DataConfig, DistillConfig
from nash_core.distill import DistillHook
from nash_core.distributed import is_main_process
from nash_core.export import load_exported, save_exported
from nash_core.io import atomic_dir, atomic_write_json, read_json
from nash_core.loading import load_seq2seq
from nash_core.methods import get_method
from nash_core.methods.base import STAGE_META
from nash_core.runtime import seed_everything
from nash_core.steps import Callback, FinetuneJob, StageJob
from nash_core.train import train_seq2seq

__all__ = ["STAGE_META", "finetune_export", "materialize_stage", "run_stage"]


def _datasets(splits_dir, data_cfg: DataConfig, tokenizer):
    from nash_core.data import tokenize_split

    return (
        tokenize_split(splits_dir, "train", tokenizer, data_cfg),
        tokenize_split(splits_dir, "validation", tokenizer, data_cfg),
    )


def _teacher_for(teacher_dir, distill: DistillConfig) -> nn.Module | None:
    """The teacher model, loaded only when some distillation weight is non-zero."""
    return (
        load_seq2seq(teacher_dir)[0] if distill.kd_weight > 0 or distill.layer_weight > 0 else None
    )


def _work_dir(out_dir: Path) -> Path:
    """Where training checkpoints live until the stage's result is written (resumable)."""
    return out_dir.with_name(f".{out_dir.name}.work")


def run_stage(job: StageJob, *, callback: Callback = None, device=None) -> Path:
    """Train one pruning stage and write its directory (see the module docstring); returns it.

    The saved checkpoint is the best by validation score among the evaluations the hooks deem
    eligible (NASH / CoFi: expected sparsity within ``sparsity_epsilon`` of the target;
    magnitude: the ramp done); if none was, the method saves the final state and
    ``stage_meta.json`` says ``on_target: false`` (structured methods).
    """
    method = get_method(job.arm.method)
    out_dir = Path(job.out_dir)
    seed_everything(job.seed)
    teacher = _teacher_for(job.teacher_dir, job.stage.distill)
    student = method.start(job)
    hooks = [DistillHook(teacher, student.model, job.stage.distill, device=device)]
    with contextlib.ExitStack() as attached:
        own = method.stage_hooks(student, job, device, attached)
        train_ds, val_ds = _datasets(job.splits_dir, job.data, student.tokenizer)
        work = _work_dir(out_dir)
        result = train_seq2seq(
            student.model,
            student.tokenizer,
            train_ds,
            val_ds,
            job.stage.train,
            work,
            hooks=hooks + own,
            callback=callback,
            seed=job.seed,
            device=device,
        )
        if not is_main_process():  # a data-parallel rank > 0: rank 0 writes the stage directory
            return out_dir
        meta = {
            "method": method.name,
            "arm": job.arm.label,
            "target": job.target,
            "prev_target": job.prev_target,
            "teacher": str(job.teacher_dir),
            "init_dir": str(job.init_dir) if job.init_dir else None,
            "decoder_layers_kept": getattr(student.model.config, "nash_decoder_layers_kept", None),
            "on_target": result.best_dir is not None,
            "best_metrics": result.best_metrics,
            "last_step": result.last_step,
        }
        with atomic_dir(out_dir) as tmp:
            if result.best_dir is not None:
                shutil.copytree(result.best_dir, tmp, dirs_exist_ok=True)
            else:
                method.save_final_state(tmp, student, own, job)
            meta.update(method.stage_record(student, own, job, tmp))
            atomic_write_json(tmp / STAGE_META, meta)
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


def materialize_stage(stage_dir: str | Path, out_dir: str | Path) -> Path:
    """Export a stage with the method it was trained by (see the module docstring); the
    export's config.json["nash"] records what was kept and the parameter counts."""
    stage_dir = Path(stage_dir)
    meta = read_json(stage_dir / STAGE_META)
    return get_method(meta["method"]).export(stage_dir, Path(out_dir), meta)


def finetune_export(job: FinetuneJob, *, callback: Callback = None, device=None) -> Path:
    """Final fine-tune of an export (task loss + optional distillation + the hooks of the
    method its config.json["nash"] names).

    Returns ``job.export_dir`` itself when fine-tuning is disabled, else the new export
    directory holding the best checkpoint by validation score.
    """
    if not job.finetune.enabled:
        return Path(job.export_dir)
    out_dir = Path(job.out_dir)
    seed_everything(job.seed)
    model, tokenizer = load_exported(job.export_dir)
    exported = read_json(Path(job.export_dir) / "config.json").get("nash") or {}
    teacher = _teacher_for(job.teacher_dir, job.finetune.distill)
    hooks = [DistillHook(teacher, model, job.finetune.distill, device=device)]
    if exported.get("method"):
        hooks += get_method(exported["method"]).finetune_hooks(model, job.export_dir)
    train_ds, val_ds = _datasets(job.splits_dir, job.data, tokenizer)
    work = _work_dir(out_dir)
    result = train_seq2seq(
        model,
        tokenizer,
        train_ds,
        val_ds,
        job.finetune.train,
        work,
        hooks=hooks,
        callback=callback,
        seed=job.seed,
        device=device,
    )
    if not is_main_process():  # a data-parallel rank > 0: rank 0 writes the export
        return out_dir
    best, _ = load_exported(result.best_dir)
    nash_meta = {k: v for k, v in exported.items() if k != "shapes"}
    nash_meta["finetune"] = {"best_metrics": result.best_metrics, "last_step": result.last_step}
    save_exported(best, tokenizer, out_dir, nash_meta)
    shutil.rmtree(work, ignore_errors=True)
    return out_dir
