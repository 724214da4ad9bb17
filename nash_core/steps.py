"""The arguments of the training steps (teacher, pruning stage, fine-tune), typed.

One definition shared by the Prefect tasks that build them (``tasks/prepare.py``,
``tasks/prune.py``), the launcher that runs them here or ships them to torchrun ranks as JSON
(:mod:`nash_core.launch`) and the stage runners they end in (:mod:`nash_core.prune`,
:mod:`nash_core.teacher`). Paths are strings so ``model_dump(mode="json")`` round-trips.

The stage runners take a :class:`StageJob` / :class:`FinetuneJob`: the step's arguments
resolved against the config (the arm, its stage settings, the data section, the seed), built
by keyword in one place (``StageJob.of(cfg, args)``), never unpacked into positionals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from nash_core.config import ArmConfig, DataConfig, FinetuneConfig, NashConfig, PruneStageConfig

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
    seed: int | None = None  # None: experiment.seed (a replicate of experiment.seeds: its own)


class FinetuneArgs(_StepArgs):
    """The final fine-tune of a materialised export."""

    step: Literal["finetune"] = "finetune"
    export_dir: str
    teacher_dir: str
    arm_index: int | None = None  # None: cfg.finetune as it is (no per-arm override)
    seed: int | None = None  # None: experiment.seed


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


# --------------------------------------------------------------------------- resolved jobs
@dataclass(frozen=True, kw_only=True)
class StageJob:
    """One pruning stage with everything resolved from the config (what the stage runner
    reads; :meth:`of` builds it from a :class:`StageArgs` and the config, by name)."""

    teacher_dir: str | Path
    init_dir: str | Path | None  # the previous stage, or the final model of ``arm.start_arm``
    arm: ArmConfig
    stage: PruneStageConfig
    prev_target: float
    target: float
    out_dir: str | Path
    splits_dir: str | Path
    data: DataConfig
    seed: int = 0

    @classmethod
    def of(cls, cfg: NashConfig, args: StageArgs) -> StageJob:
        return cls(
            teacher_dir=args.teacher_dir,
            init_dir=args.init_dir,
            arm=cfg.pruning.arms[args.arm_index],
            stage=cfg.stage_config(args.arm_index),
            prev_target=args.prev_target,
            target=args.target,
            out_dir=args.out_dir,
            splits_dir=args.splits_dir,
            data=cfg.data,
            seed=cfg.experiment.seed if args.seed is None else args.seed,
        )


@dataclass(frozen=True, kw_only=True)
class FinetuneJob:
    """The final fine-tune of a materialised export, resolved from the config."""

    export_dir: str | Path
    teacher_dir: str | Path
    finetune: FinetuneConfig
    out_dir: str | Path
    splits_dir: str | Path
    data: DataConfig
    seed: int = 0

    @classmethod
    def of(cls, cfg: NashConfig, args: FinetuneArgs) -> FinetuneJob:
        return cls(
            export_dir=args.export_dir,
            teacher_dir=args.teacher_dir,
            finetune=cfg.finetune
            if args.arm_index is None
            else cfg.finetune_config(args.arm_index),
            out_dir=args.out_dir,
            splits_dir=args.splits_dir,
            data=cfg.data,
            seed=cfg.experiment.seed if args.seed is None else args.seed,
        )
