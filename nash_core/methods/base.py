"""The interface every compression method implements, and the registry that names them.

In the style of Hugging Face PEFT: a method is a class registered by name together with its
config class (its arm options, in :mod:`nash_core.config`); the one stage runner
(:func:`nash_core.prune.run_stage`), the export (:func:`nash_core.prune.materialize_stage`) and
the final fine-tune (:func:`nash_core.prune.finetune_export`) look the method up by the name an
arm or a stage directory records and call its hooks:

- how the student starts: :meth:`PruningMethod.start` (a fresh student from the teacher, or the
  previous stage / the arm it builds on), :meth:`PruningMethod.initial_student`;
- its training hooks (masks, constraints, weight masks): :meth:`PruningMethod.stage_hooks`;
- what a stage records: :meth:`PruningMethod.stage_record`, and the state it saves when no
  evaluation was eligible for the best checkpoint: :meth:`PruningMethod.save_final_state`;
- how a stage is exported: :meth:`PruningMethod.export`;
- its fine-tune hooks: :meth:`PruningMethod.finetune_hooks`.

The registry is filled by ``nash_core/methods/__init__.py`` importing each method module; a
method module imports this module and the engine, never the registry package or another
method, so a stage's cached result hashes the shared code and its own method's module only
(tasks/cache.py). No Prefect, no MLflow.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

STAGE_META = "stage_meta.json"


@dataclass
class Student:
    """The model a stage trains, and what the method carries along with it."""

    model: nn.Module
    tokenizer: Any
    masks: Any = None  # nash_core.masks.MaskSet of a structured method (None: no masks)
    previous: dict | None = None  # the previous stage's pruning state (Lagrange multipliers)
    source: dict | None = None  # config.json["nash"] of the model it started from, if any


class PruningMethod:
    """One compression method. Subclasses set ``name`` and ``config_class`` and override the
    hooks they need; the defaults describe a method without masks (SFT)."""

    name: ClassVar[str]
    config_class: ClassVar[type]  # its arm config (nash_core.config)
    #: A model of the same decoder depth that the sweep compares others against (SFT).
    depth_baseline: ClassVar[bool] = False
    #: Compared with the depth baseline at the same decoder depth (NASH vs SFT).
    compare_with_depth_baseline: ClassVar[bool] = False

    @property
    def module(self) -> str:
        """The module that defines the method (what its cached steps hash besides the
        shared code)."""
        return type(self).__module__

    # ------------------------------------------------------------------ how the student starts
    def initial_student(self, teacher_dir: str | Path, arm) -> tuple[nn.Module, Any]:
        """A copy of the teacher with the arm's decoder layers (all when it sets none)."""
        from nash_core.adapters import get_adapter
        from nash_core.layer_selection import keep_decoder_layers, select_layers
        from nash_core.loading import load_seq2seq

        student, tokenizer = load_seq2seq(teacher_dir)
        if arm.decoder_layers is not None:
            n_layers = len(get_adapter(student).layers(student, "decoder"))
            keep_decoder_layers(
                student,
                select_layers(n_layers, arm.decoder_layers, arm.layer_selection, arm.custom_layers),
            )
        return student, tokenizer

    def start(self, job) -> Student:
        """The student of stage ``job`` (a :class:`nash_core.steps.StageJob`): fresh from the
        teacher for an arm's first stage, else the model in ``job.init_dir``."""
        from nash_core.loading import load_seq2seq

        if job.init_dir is None:
            return Student(*self.initial_student(job.teacher_dir, job.arm))
        return Student(*load_seq2seq(job.init_dir))

    # ------------------------------------------------------------------ its hooks
    def stage_hooks(self, student: Student, job, device, attached: contextlib.ExitStack) -> list:
        """Training hooks of the stage besides distillation (``attached``: context managers
        that stay entered while the stage trains and writes its directory)."""
        return []

    # ------------------------------------------------------------------ what a stage records
    def save_final_state(self, out: Path, student: Student, hooks: list, job) -> None:
        """Write the student as it ended, when no evaluation was eligible as the best."""
        student.model.save_pretrained(str(out), safe_serialization=True)
        student.tokenizer.save_pretrained(str(out))

    def stage_record(self, student: Student, hooks: list, job, out: Path) -> dict:
        """Entries of ``stage_meta.json`` beyond the shared ones (``out``: the stage's files)."""
        return {}

    # ------------------------------------------------------------------ export
    def export(self, stage_dir: Path, out_dir: Path, meta: dict) -> Path:
        raise NotImplementedError

    # ------------------------------------------------------------------ fine-tune
    def finetune_hooks(self, model: nn.Module, export_dir: str | Path) -> list:
        """Training hooks of the final fine-tune (e.g. weight masks that keep zeros zero)."""
        return []


#: name -> the registered method (one instance each).
METHODS: dict[str, PruningMethod] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: register ``cls`` under ``cls.name`` with its ``config_class``."""
    name = cls.name
    tag = cls.config_class.model_fields["method"].annotation.__args__[0]
    if tag != name:
        raise ValueError(f"{cls.__name__}: config class {cls.config_class.__name__} is for {tag!r}")
    if name in METHODS and type(METHODS[name]) is not cls:
        raise ValueError(f"compression method {name!r} is registered twice")
    METHODS[name] = cls()
    return cls
