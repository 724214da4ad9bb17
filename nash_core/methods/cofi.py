"""CoFi (Xia et al., 2022) as a baseline: the full decoder depth; heads, FFN units and whole
sub-layers of both stacks (cross-attention included) and, by default (``hidden``), one gate per
hidden dimension shared by the whole model, masked to one model-wide target."""

from __future__ import annotations

from torch import nn

from nash_core.config import CofiArm
from nash_core.methods.base import register
from nash_core.methods.structured import StructuredMethod


@register
class Cofi(StructuredMethod):
    name = "cofi"
    config_class = CofiArm

    def plan_masks(self, student: nn.Module, arm: CofiArm, stage_cfg):
        from nash_core.masks import MaskSet, plan_groups

        return MaskSet(
            plan_groups(
                student,
                stacks=("encoder", "decoder"),
                sublayers=True,
                cross=True,
                hidden=arm.hidden,
                hidden_init=stage_cfg.hidden_mask_init,
                head_init=stage_cfg.head_mask_init,
                ffn_init=stage_cfg.ffn_mask_init,
            )
        )

    def constraint(self, arm, prev_target: float, target: float):
        from nash_core.sparsity import Constraint

        return Constraint("model", ("encoder", "decoder"), prev_target, target)
