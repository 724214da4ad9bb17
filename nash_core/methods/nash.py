"""NASH (method.md): keep k decoder layers of the teacher (uniform / low / high / custom), prune
the encoder's attention heads and FFN units with hard-concrete masks to each sparsity target,
the target measured on the encoder. Compared at equal decoder depth with SFT."""

from __future__ import annotations

from torch import nn

from nash_core.config import NashArm
from nash_core.methods.base import register
from nash_core.methods.structured import StructuredMethod


@register
class Nash(StructuredMethod):
    name = "nash"
    config_class = NashArm
    compare_with_depth_baseline = True

    def plan_masks(self, student: nn.Module, arm: NashArm, stage_cfg):
        from nash_core.masks import MaskSet, plan_groups

        return MaskSet(
            plan_groups(
                student,
                stacks=("encoder",),
                head_init=stage_cfg.head_mask_init,
                ffn_init=stage_cfg.ffn_mask_init,
            )
        )
