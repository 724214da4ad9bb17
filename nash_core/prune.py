"""Stage runners: prune (one sparsity target), materialise, final fine-tune (method.md section 5).

Each runner reads directories and writes one directory atomically, so the flow can cache, retry
and resume them:

- :func:`run_stage` trains a student (weights + masks + Lagrange multipliers) with task loss,
  distillation and the sparsity constraint. The first stage starts from the teacher with the
  arm's decoder layers; stage i continues from stage i-1's weights, masks and multipliers and
  ramps the target from the previous one. Output: the unmaterialised student (HF directory),
  ``nash_masks.pt`` (:data:`sparsity.MASKS_FILE`) and ``stage_meta.json``.
- :func:`materialize_stage` folds and slices the masks into a smaller model and exports it.
- :func:`finetune_export` trains the exported model a little more (task loss + optional KD).

Methods: ``nash`` (k decoder layers; encoder heads + FFN units; target on encoder sparsity),
``cofi`` (full decoder depth; heads, FFN units and whole sub-layers in both stacks, and by
default (``arm.hidden``) the hidden-dimension mask; one global target), ``sft`` (k decoder
layers, no masks: a single distillation fine-tune), ``magnitude`` (weight-level, in
:mod:`nash_core.magnitude`; its fine-tune holds the zeros).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from nash_core.adapters import get_adapter
from nash_core.config import ArmConfig, DataConfig, DistillConfig, FinetuneConfig, PruneStageConfig
from nash_core.distill import DistillHook
from nash_core.distributed import is_main_process
from nash_core.export import load_exported, save_exported
from nash_core.io import atomic_dir, atomic_write_json, read_json
from nash_core.layer_selection import keep_decoder_layers, select_layers
from nash_core.loading import load_seq2seq
from nash_core.masks import MaskSet, plan_groups
from nash_core.materialize import materialize_masks
from nash_core.runtime import seed_everything
from nash_core.sparsity import (
    Constraint,
    SparsityHook,
    count_parameters,
    count_prunable,
    load_masks,
    save_pruning_state,
)
from nash_core.steps import Callback
from nash_core.train import train_seq2seq

log = logging.getLogger(__name__)
STAGE_META = "stage_meta.json"


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


def initial_student(teacher_dir: str | Path, arm: ArmConfig) -> tuple[nn.Module, Any]:
    """A copy of the teacher with the arm's decoder layers (all of them for cofi)."""
    student, tokenizer = load_seq2seq(teacher_dir)
    if arm.method in ("nash", "sft"):
        n_layers = len(get_adapter(student).layers(student, "decoder"))
        keep_decoder_layers(
            student,
            select_layers(n_layers, arm.decoder_layers, arm.layer_selection, arm.custom_layers),
        )
    return student, tokenizer


def plan_masks(student: nn.Module, arm: ArmConfig, stage_cfg: PruneStageConfig) -> MaskSet | None:
    inits = {"head_init": stage_cfg.head_mask_init, "ffn_init": stage_cfg.ffn_mask_init}
    if arm.method == "nash":
        return MaskSet(plan_groups(student, stacks=("encoder",), **inits))
    if arm.method == "cofi":
        return MaskSet(
            plan_groups(
                student,
                stacks=("encoder", "decoder"),
                sublayers=True,
                cross=True,
                hidden=arm.uses_hidden_mask,
                hidden_init=stage_cfg.hidden_mask_init,
                **inits,
            )
        )
    return None


def constraint_for(arm: ArmConfig, prev_target: float, target: float) -> Constraint:
    if arm.method == "cofi":
        return Constraint("model", ("encoder", "decoder"), prev_target, target)
    return Constraint("encoder", ("encoder",), prev_target, target)


def _starting_point(teacher_dir, init_dir, arm: ArmConfig, stage_cfg: PruneStageConfig):
    """(student, tokenizer, masks, previous pruning state): a fresh student with planned masks
    for the first stage, else the previous stage's weights, masks and multipliers."""
    if init_dir is None:
        student, tokenizer = initial_student(teacher_dir, arm)
        return student, tokenizer, plan_masks(student, arm, stage_cfg), None
    student, tokenizer = load_seq2seq(init_dir)
    masks, previous = load_masks(init_dir)
    return student, tokenizer, masks, previous


def _sparsity_hook(student, masks, arm, stage_cfg, prev_target, target, previous):
    hook = SparsityHook(
        student,
        masks,
        [constraint_for(arm, prev_target, target)],
        warmup_steps=stage_cfg.target_warmup_steps,
        mask_lr=stage_cfg.mask_lr,
        lagrangian_lr=stage_cfg.lagrangian_lr,
        epsilon=stage_cfg.sparsity_epsilon,
    )
    if previous:
        hook.lagrangian.load_state_dict(previous["lagrangian"])
    return hook


def run_stage(
    teacher_dir: str | Path,
    init_dir: str | Path | None,
    arm: ArmConfig,
    stage_cfg: PruneStageConfig,
    prev_target: float,
    target: float,
    out_dir: str | Path,
    *,
    splits_dir: str | Path,
    data_cfg: DataConfig,
    callback: Callback = None,
    seed: int = 0,
    device=None,
) -> Path:
    """Train one pruning stage and write its directory (see the module docstring); returns it.

    The saved checkpoint is the best by validation score among evaluations whose expected
    sparsity is within ``stage_cfg.sparsity_epsilon`` of ``target``; if none was, the final
    state is saved and ``stage_meta.json`` says ``on_target: false``.
    ``method: magnitude`` runs :func:`nash_core.magnitude.run_stage` (same arguments).
    """
    if arm.method == "magnitude":
        from nash_core import magnitude

        return magnitude.run_stage(
            teacher_dir, init_dir, arm, stage_cfg, prev_target, target, out_dir,
            splits_dir=splits_dir, data_cfg=data_cfg, callback=callback, seed=seed, device=device,
        )  # fmt: skip
    out_dir = Path(out_dir)
    seed_everything(seed)
    teacher = _teacher_for(teacher_dir, stage_cfg.distill)
    student, tokenizer, masks, previous = _starting_point(teacher_dir, init_dir, arm, stage_cfg)

    hooks = [DistillHook(teacher, student, stage_cfg.distill, device=device)]
    sparsity = None
    with contextlib.ExitStack() as attached:
        if masks is not None:
            attached.enter_context(masks.to(device or "cpu").attached(student))
            sparsity = _sparsity_hook(student, masks, arm, stage_cfg, prev_target, target, previous)
            hooks.append(sparsity)

        train_ds, val_ds = _datasets(splits_dir, data_cfg, tokenizer)
        work = _work_dir(out_dir)
        result = train_seq2seq(
            student,
            tokenizer,
            train_ds,
            val_ds,
            stage_cfg.train,
            work,
            hooks=hooks,
            callback=callback,
            seed=seed,
            device=device,
        )
        if not is_main_process():  # a data-parallel rank > 0: rank 0 writes the stage directory
            return out_dir
        meta = {
            "method": arm.method,
            "arm": arm.label,
            "target": target,
            "prev_target": prev_target,
            "teacher": str(teacher_dir),
            "init_dir": str(init_dir) if init_dir else None,
            "decoder_layers_kept": getattr(student.config, "nash_decoder_layers_kept", None),
            "on_target": result.best_dir is not None,
            "best_metrics": result.best_metrics,
            "last_step": result.last_step,
        }
        _write_stage(out_dir, result, meta, student, tokenizer, sparsity, stage_cfg, target)
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _write_stage(out_dir, result, meta, student, tokenizer, sparsity, stage_cfg, target) -> None:
    """The stage directory: the best on-target checkpoint, else the final state (with a warning
    that says which knobs move the sparsity)."""
    with atomic_dir(out_dir) as tmp:
        if meta["on_target"]:
            shutil.copytree(result.best_dir, tmp, dirs_exist_ok=True)
        else:
            reached = sparsity.eval_metrics() if sparsity is not None else {}
            ended = ", ".join(
                f"{k.removeprefix('sparsity_expected_')} {v:.3f}"
                for k, v in reached.items()
                if k.startswith("sparsity_expected_")
            )
            log.warning(
                "stage %s: no evaluation was within %.3f of target %.3f (expected sparsity "
                "at the end: %s); saving the final state, marked on_target=false. The "
                "Lagrangian had not settled: give the stage more steps "
                "(pruning.stage.train.max_steps), evaluate more often (eval_every), split "
                "the target into stages, or widen pruning.stage.sparsity_epsilon.",
                out_dir,
                stage_cfg.sparsity_epsilon,
                target,
                ended or "n/a",
            )
            student.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            if sparsity is not None:
                save_pruning_state(tmp, sparsity.masks, sparsity.lagrangian, reached)
        if sparsity is not None:
            meta["sparsity"] = read_json(tmp / "nash_sparsity.json")
        atomic_write_json(tmp / STAGE_META, meta)


def materialize_stage(stage_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold and slice a stage's deterministic masks into a smaller model and export it.

    The export's config.json["nash"] records what was kept plus the measured prunable parameter
    counts before and after (encoder and whole model).
    """
    stage_dir = Path(stage_dir)
    meta = read_json(stage_dir / STAGE_META)
    if meta["method"] == "magnitude":  # nothing to slice: zeros in dense tensors
        from nash_core.magnitude import export_stage

        return export_stage(stage_dir, out_dir)
    model, tokenizer = load_seq2seq(stage_dir)
    before = {"encoder": count_prunable(model, ("encoder",)), "total": count_prunable(model)}
    params_before = count_parameters(model)
    masks, _ = load_masks(stage_dir)
    if masks is not None:
        materialize_masks(model, masks)
    after = {"encoder": count_prunable(model, ("encoder",)), "total": count_prunable(model)}
    nash_meta = {
        "method": meta["method"],
        "arm": meta["arm"],
        "target": meta["target"],
        "teacher": meta["teacher"],
        "on_target": meta["on_target"],
        "prunable_params_before": before,
        "prunable_params_after": after,
        "params_before": params_before,
        "params_after": count_parameters(model),
        "encoder_sparsity": 1 - after["encoder"] / before["encoder"],
    }
    return save_exported(model, tokenizer, out_dir, nash_meta)


def finetune_export(
    export_dir: str | Path,
    teacher_dir: str | Path,
    finetune_cfg: FinetuneConfig,
    out_dir: str | Path,
    *,
    splits_dir: str | Path,
    data_cfg: DataConfig,
    callback: Callback = None,
    seed: int = 0,
    device=None,
) -> Path:
    """Final fine-tune of a materialised export (task loss + optional distillation).

    Returns ``export_dir`` itself when fine-tuning is disabled, else the new export directory
    holding the best checkpoint by validation score.
    """
    if not finetune_cfg.enabled:
        return Path(export_dir)
    from nash_core.magnitude import finetune_hooks

    out_dir = Path(out_dir)
    seed_everything(seed)
    model, tokenizer = load_exported(export_dir)
    teacher = _teacher_for(teacher_dir, finetune_cfg.distill)
    hooks = [DistillHook(teacher, model, finetune_cfg.distill, device=device)]
    hooks += finetune_hooks(model, export_dir)  # weight-level zeros (magnitude) stay zero
    train_ds, val_ds = _datasets(splits_dir, data_cfg, tokenizer)
    work = _work_dir(out_dir)
    result = train_seq2seq(
        model,
        tokenizer,
        train_ds,
        val_ds,
        finetune_cfg.train,
        work,
        hooks=hooks,
        callback=callback,
        seed=seed,
        device=device,
    )
    if not is_main_process():  # a data-parallel rank > 0: rank 0 writes the export
        return out_dir
    best, _ = load_exported(result.best_dir)
    nash_meta = {
        k: v
        for k, v in read_json(Path(export_dir) / "config.json")["nash"].items()
        if k != "shapes"
    }
    nash_meta["finetune"] = {"best_metrics": result.best_metrics, "last_step": result.last_step}
    save_exported(best, tokenizer, out_dir, nash_meta)
    shutil.rmtree(work, ignore_errors=True)
    return out_dir
