"""What the structured methods share (NASH, CoFi, SFT): a copy of the teacher with k decoder
layers (or all of them), hard-concrete masks on heads / FFN units / sub-layers / the hidden
dimension trained against a sparsity constraint by Lagrange multipliers
(:class:`nash_core.sparsity.SparsityHook`), and an export that folds and slices the masks into a
smaller model (:func:`nash_core.materialize.materialize_masks`).

A method says which masks it plans (:meth:`StructuredMethod.plan_masks`, None: no masks, as
SFT) and on which stacks its target is measured (:meth:`StructuredMethod.constraint`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from torch import nn

from nash_core.methods.base import PruningMethod, Student

log = logging.getLogger(__name__)
SPARSITY_FILE = "nash_sparsity.json"


class StructuredMethod(PruningMethod):
    """Masks on the model's structure; the export is a smaller dense model."""

    def plan_masks(self, student: nn.Module, arm, stage_cfg):
        """The masks of a fresh student (a ``MaskSet``), or None (no masks)."""
        return None

    def constraint(self, arm, prev_target: float, target: float):
        """The sparsity constraint of a stage (:class:`nash_core.sparsity.Constraint`)."""
        from nash_core.sparsity import Constraint

        return Constraint("encoder", ("encoder",), prev_target, target)

    # ------------------------------------------------------------------ the student
    def start(self, job) -> Student:
        """Fresh: the initial student and its planned masks. Continued: the previous stage's
        weights, masks and multipliers."""
        from nash_core.loading import load_seq2seq
        from nash_core.sparsity import load_masks

        if job.init_dir is None:
            student, tokenizer = self.initial_student(job.teacher_dir, job.arm)
            return Student(student, tokenizer, self.plan_masks(student, job.arm, job.stage))
        student, tokenizer = load_seq2seq(job.init_dir)
        masks, previous = load_masks(job.init_dir)
        return Student(student, tokenizer, masks, previous)

    def stage_hooks(self, student: Student, job, device, attached: contextlib.ExitStack) -> list:
        """The masks attached to the student and the hook that trains them (none without masks)."""
        from nash_core.sparsity import SparsityHook

        if student.masks is None:
            return []
        attached.enter_context(student.masks.to(device or "cpu").attached(student.model))
        stage = job.stage
        hook = SparsityHook(
            student.model,
            student.masks,
            [self.constraint(job.arm, job.prev_target, job.target)],
            warmup_steps=stage.target_warmup_steps,
            mask_lr=stage.mask_lr,
            lagrangian_lr=stage.lagrangian_lr,
            epsilon=stage.sparsity_epsilon,
        )
        if student.previous:
            hook.lagrangian.load_state_dict(student.previous["lagrangian"])
        return [hook]

    # ------------------------------------------------------------------ what a stage records
    def save_final_state(self, out: Path, student: Student, hooks: list, job) -> None:
        """No evaluation came within epsilon of the target: the final state, with a warning
        that says which knobs move the sparsity."""
        from nash_core.sparsity import save_pruning_state

        sparsity = next(iter(hooks), None)
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
            job.out_dir,
            job.stage.sparsity_epsilon,
            job.target,
            ended or "n/a",
        )
        super().save_final_state(out, student, hooks, job)
        if sparsity is not None:
            save_pruning_state(out, sparsity.masks, sparsity.lagrangian, reached)

    def stage_record(self, student: Student, hooks: list, job, out: Path) -> dict:
        from nash_core.io import read_json

        return {"sparsity": read_json(out / SPARSITY_FILE)} if hooks else {}

    # ------------------------------------------------------------------ export
    def export(self, stage_dir: Path, out_dir: Path, meta: dict) -> Path:
        """Fold and slice the stage's deterministic masks into a smaller model; config.json
        ["nash"] records what was kept and the measured prunable parameter counts before and
        after (encoder and whole model)."""
        from nash_core.export import save_exported
        from nash_core.loading import load_seq2seq
        from nash_core.materialize import materialize_masks
        from nash_core.sparsity import count_parameters, count_prunable, load_masks

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
