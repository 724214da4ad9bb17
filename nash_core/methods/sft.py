"""SFT: the teacher with k decoder layers, nothing masked; one distillation fine-tune per arm
(no sparsity targets). The depth baseline NASH candidates are compared with."""

from __future__ import annotations

from nash_core.config import SftArm
from nash_core.methods.base import register
from nash_core.methods.structured import StructuredMethod


@register
class Sft(StructuredMethod):
    name = "sft"
    config_class = SftArm
    depth_baseline = True
