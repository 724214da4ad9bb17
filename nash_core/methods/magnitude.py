"""Unstructured magnitude pruning: the weight-level arm next to (and on top of) NASH.

``method: magnitude`` zeroes the smallest-magnitude entries of the ``nn.Linear`` weights of the
chosen stacks (encoder and/or decoder; embeddings, norms, position tables and the LM head are
never pruned), either over all of them at once (``scope: global``: one threshold) or each
weight matrix on its own (``per_layer``). The sparsity ramps during the stage with the cubic
schedule of Zhu & Gupta (2017, "To prune, or not to prune"),

    s_t = s_f + (s_i - s_f) * (1 - t / n)^3      for t <= n, then s_f,

(``s_i`` the previous target, ``s_f`` this stage's, ``n`` = ``pruning.stage.target_warmup_steps``
capped at the stage's steps, masks recomputed every ``update_every`` steps), or in one shot
before the first step. Training distils from the teacher like every other arm
(:class:`nash_core.distill.DistillHook`); after every optimizer step the mask is re-applied, so
a pruned weight stays exactly zero (AdamW may move it; it is put back). Selection is by index
(``topk``), not by a threshold, so the zero count is exactly ``round(s * n)`` even with ties.

The fine-tune holds the mask fixed: :meth:`Magnitude.finetune_hooks` rebuilds it from the zeros
of the exported weights (:class:`FixedMaskHook`). The export is a normal Hugging Face directory:
dense tensors with zeros in them (a plain T5/BART dir for an arm on the teacher; a NASH export with
``modeling_nash.py`` for ``from_arm: nash-...``), config.json["nash"]["unstructured"] saying
what was pruned.

Public pieces: :func:`cubic_sparsity`, :func:`prunable_linears`, :func:`magnitude_masks`,
:func:`zero_fraction` (pure), :class:`MagnitudeHook`, :class:`FixedMaskHook`
(``train.TrainHook``s), and the registered method :class:`Magnitude` (its stage runs in the one
stage runner, :func:`nash_core.prune.run_stage`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from nash_core.config import MagnitudeArm
from nash_core.io import read_json
from nash_core.methods.base import PruningMethod, Student, register
from nash_core.train import TrainHook

log = logging.getLogger(__name__)
UNSTRUCTURED = "unstructured"  # key in config.json["nash"] and stage_meta.json


# --------------------------------------------------------------------------- pure functions
def cubic_sparsity(step: int, initial: float, final: float, ramp_steps: int) -> float:
    """Zhu & Gupta's cubic schedule: sparsity after ``step`` completed steps of ``ramp_steps``."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return final
    return final + (initial - final) * (1.0 - step / ramp_steps) ** 3


def prunable_linears(model: nn.Module, stacks: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """``(qualified name, module)`` of every non-empty ``nn.Linear`` in the given stacks."""
    from nash_core.adapters import get_adapter

    adapter, names = get_adapter(model), {id(m): n for n, m in model.named_modules()}
    found, seen = [], set()
    for stack in stacks:
        for layer in adapter.layers(model, stack):
            for module in layer.modules():
                if (
                    isinstance(module, nn.Linear)
                    and module.weight.numel()
                    and id(module) not in seen
                ):
                    seen.add(id(module))
                    found.append((names.get(id(module), f"{stack}.?"), module))
    return found


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask of ``scores`` (flat) with exactly its ``k`` smallest entries dropped."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        keep[torch.topk(scores, k, largest=False, sorted=False).indices] = False
    return keep


@torch.no_grad()
def magnitude_masks(
    weights: Sequence[torch.Tensor], sparsity: float, scope: str = "global"
) -> list[torch.Tensor]:
    """Keep-masks (bool, shaped like each weight) zeroing exactly ``round(sparsity * n)`` of
    the smallest |w|: ``n`` all entries together (global) or each weight's own (per_layer).
    Zeros already there have |w| = 0, so they are pruned first: masks only grow sparser."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} is outside [0, 1)")
    if scope == "per_layer":
        return [
            _lowest(w.detach().abs().flatten().float(), round(sparsity * w.numel())).view_as(w)
            for w in weights
        ]
    if scope != "global":
        raise ValueError(f"scope '{scope}': expected 'global' or 'per_layer'")
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights])
    keep = _lowest(flat, round(sparsity * flat.numel()))
    return [m.view_as(w) for m, w in zip(keep.split([w.numel() for w in weights]), weights)]


def zero_fraction(weights: Sequence[torch.Tensor]) -> float:
    """Fraction of exact zeros over all entries of ``weights``."""
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


# --------------------------------------------------------------------------- training hooks
class FixedMaskHook(TrainHook):
    """Holds a weight-level mask: after every optimizer step ``w *= mask`` (zeros stay zero).

    ``masks`` default to the current non-zeros of ``linears`` (what a fine-tune needs)."""

    def __init__(self, linears: Sequence[nn.Module], masks: Sequence[torch.Tensor] | None = None):
        self.weights = [m.weight for m in linears]
        self.masks = (
            [w.detach() != 0 for w in self.weights] if masks is None else [m for m in masks]
        )
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for w, m in zip(self.weights, self.masks):
            w.mul_(m.to(w.device))

    def after_step(self, step: int) -> None:
        self.apply()

    def eval_metrics(self) -> dict:
        return {"weight_zero_fraction": zero_fraction(self.weights)}

    def state_dict(self) -> dict:
        return {"masks": [m.cpu() for m in self.masks]}

    def load_state_dict(self, state: dict) -> None:
        for m, saved in zip(self.masks, state["masks"]):
            m.copy_(saved)
        self.apply()


class MagnitudeHook(FixedMaskHook):
    """Gradual magnitude pruning from ``initial`` to ``final`` sparsity (see module docstring).

    Only evaluations at the final sparsity may become the best checkpoint (``is_eligible``)."""

    def __init__(
        self,
        linears: Sequence[nn.Module],
        initial: float,
        final: float,
        *,
        scope: str = "global",
        schedule: str = "cubic",
        ramp_steps: int = 0,
        update_every: int = 1,
    ):
        self.initial, self.final, self.scope = initial, final, scope
        self.ramp_steps = 0 if schedule == "one_shot" else ramp_steps
        self.update_every = update_every
        self.current = 0.0
        weights = [m.weight for m in linears]
        start = self.final if self.ramp_steps == 0 else max(initial, zero_fraction(weights))
        super().__init__(linears, magnitude_masks(weights, start, scope))
        self.current = start

    def after_step(self, step: int) -> None:
        done = step + 1  # optimizer steps completed
        if done <= self.ramp_steps and (done % self.update_every == 0 or done == self.ramp_steps):
            target = cubic_sparsity(done, self.initial, self.final, self.ramp_steps)
            self.masks = magnitude_masks(self.weights, target, self.scope)
            self.current = target
        self.apply()

    def eval_metrics(self) -> dict:
        return {**super().eval_metrics(), "magnitude_sparsity_scheduled": self.current}

    def is_eligible(self, metrics: dict) -> bool:
        return self.current == self.final

    def state_dict(self) -> dict:
        return {**super().state_dict(), "current": self.current}

    def load_state_dict(self, state: dict) -> None:
        self.masks = [m.to(w.device) for m, w in zip(state["masks"], self.weights)]
        self.current = state["current"]
        self.apply()


# --------------------------------------------------------------------------- the method
@register
class Magnitude(PruningMethod):
    """Weight-level pruning: the student is the teacher (with the arm's decoder layers, when
    it sets them) or the final model of ``from_arm``; the stage ramps the zeros
    (:class:`MagnitudeHook`); the export is the same dense weights; the fine-tune holds the
    zeros (:class:`FixedMaskHook`)."""

    name = "magnitude"
    config_class = MagnitudeArm

    def start(self, job) -> Student:
        """Fresh: the teacher (k decoder layers when the arm says so). Continued: the previous
        stage, or for ``from_arm`` the final model of the arm it builds on (then
        ``job.prev_target`` is 0), whose structure the stage records."""
        student = super().start(job)
        if job.init_dir is not None:
            student.source = read_json(Path(job.init_dir) / "config.json").get("nash")
        return student

    def stage_hooks(self, student: Student, job, device, attached) -> list:
        opts, steps = job.arm.magnitude, job.stage.train.max_steps
        student.model.to(device or "cpu")
        ramp = (
            job.stage.target_warmup_steps
            if steps is None
            else min(job.stage.target_warmup_steps, steps)
        )
        return [
            MagnitudeHook(
                [m for _, m in prunable_linears(student.model, opts.stacks)],
                job.prev_target,
                job.target,
                scope=opts.scope,
                schedule=opts.schedule,
                ramp_steps=ramp,
                update_every=opts.update_every,
            )
        ]

    def save_final_state(self, out: Path, student: Student, hooks: list, job) -> None:
        """No evaluation after the ramp: the final state is at the target by construction."""
        hooks[0].apply()
        super().save_final_state(out, student, hooks, job)

    def stage_record(self, student: Student, hooks: list, job, out: Path) -> dict:
        opts, source = job.arm.magnitude, student.source
        return {
            "on_target": True,  # the mask is exact: every eligible evaluation is at the target
            UNSTRUCTURED: {
                "target": job.target,
                "scope": opts.scope,
                "schedule": opts.schedule,
                "stacks": list(opts.stacks),
                "from_arm": job.arm.from_arm,
            },
            # the structure of the model this arm started from (NASH: its narrow encoder)
            "source_nash": {k: v for k, v in (source or {}).items() if k != "shapes"} or None,
        }

    def export(self, stage_dir: Path, out_dir: Path, meta: dict) -> Path:
        """The same dense weights (zeros in them), with config.json["nash"] recording the
        unstructured pruning and, on top of NASH, the source's structure
        (``encoder_sparsity`` stays the structured one)."""
        from nash_core.export import save_exported
        from nash_core.loading import load_seq2seq
        from nash_core.sparsity import count_parameters, count_prunable

        model, tokenizer = load_seq2seq(stage_dir)
        unstructured = dict(meta[UNSTRUCTURED])
        weights = [m.weight for _, m in prunable_linears(model, unstructured["stacks"])]
        pruned = sum(w.numel() for w in weights)
        unstructured.update(
            weight_zero_fraction=zero_fraction(weights),
            pruned_weights=pruned,
            pruned_weights_nonzero=pruned - sum(int((w == 0).sum()) for w in weights),
        )
        source = meta.get("source_nash") or {}
        prunable = {"encoder": count_prunable(model, ("encoder",)), "total": count_prunable(model)}
        nash_meta = {
            **source,
            "method": meta["method"],
            "arm": meta["arm"],
            "target": meta["target"],
            "teacher": meta["teacher"],
            "on_target": meta["on_target"],
            "prunable_params_before": source.get("prunable_params_before", prunable),
            "prunable_params_after": prunable,
            "params_before": source.get("params_before", count_parameters(model)),
            "params_after": count_parameters(model),
            "encoder_sparsity": source.get("encoder_sparsity", 0.0),
            UNSTRUCTURED: unstructured,
        }
        nash_meta.pop("finetune", None)
        return save_exported(model, tokenizer, out_dir, nash_meta)

    def finetune_hooks(self, model: nn.Module, export_dir: str | Path) -> list:
        """The mask holder of the fine-tune, rebuilt from the zeros of the exported weights."""
        nash = read_json(Path(export_dir) / "config.json").get("nash") or {}
        if UNSTRUCTURED not in nash:
            return []
        stacks = nash[UNSTRUCTURED]["stacks"]
        return [FixedMaskHook([m for _, m in prunable_linears(model, stacks)])]
