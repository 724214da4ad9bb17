"""The arguments of the training steps (teacher, pruning stage, fine-tune), typed.

One definition shared by the Prefect tasks that build them (``tasks/prepare.py``,
``tasks/prune.py``), the launcher that runs them here or ships them to torchrun ranks as JSON
(:mod:`nash_core.launch`) and the stage runners they end in (:mod:`nash_core.prune`,
:mod:`nash_core.teacher`). Paths are strings so ``model_dump(mode="json")`` round-trips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

#: ``callback(step, metrics)``: where a training step reports its curve (MLflow, a JSONL file).
Callback = Callable[[int, dict], Any] | None


class _StepArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    out_dir: str  # the directory the step writes (its parent holds torchrun's spec and log)
    splits_dir: str  # the prepared data splits


class TeacherArgs(_StepArgs):
    """Fine-tune the base model into the teacher."""

    step: Literal["teacher"] = "teacher"
    base_info: dict[str, Any]  # nash_core.base_model.BaseInfo as a dict


class StageArgs(_StepArgs):
    """One pruning stage of ``cfg.pruning.arms[arm_index]``."""

    step: Literal["stage"] = "stage"
    teacher_dir: str
    init_dir: str | None  # the previous stage's directory; None for an arm's first stage
    arm_index: int
    prev_target: float
    target: float


class FinetuneArgs(_StepArgs):
    """The final fine-tune of a materialised export."""

    step: Literal["finetune"] = "finetune"
    export_dir: str
    teacher_dir: str
    arm_index: int | None = None  # None: cfg.finetune as it is (no per-arm override)


StepArgs = TeacherArgs | StageArgs | FinetuneArgs
ARGS: dict[str, type[_StepArgs]] = {
    "teacher": TeacherArgs,
    "stage": StageArgs,
    "finetune": FinetuneArgs,
}


def step_args(step: str, args: StepArgs | dict) -> StepArgs:
    """``args`` as the typed arguments of ``step`` (a dict is validated: JSON from a spec file)."""
    if step not in ARGS:
        raise ValueError(f"unknown training step {step!r}; one of {sorted(ARGS)}")
    model = ARGS[step]
    if isinstance(args, model):
        return args
    if isinstance(args, BaseModel):
        raise ValueError(f"the {step} step takes {model.__name__}, not {type(args).__name__}")
    return model.model_validate({**args, "step": step})
