"""The small objects tasks exchange: the sweep context and the candidate specs.

Tasks get these (plus :class:`tasks.cache.StepResult` paths) and nothing heavier, so any task
runner -- threads, or Dask / Ray worker processes -- can ship them.
"""

from __future__ import annotations

from functools import cached_property

from pydantic import BaseModel

from nash_core.config import ArmConfig, NashConfig

TEACHER_LABEL = "teacher"
#: Suffix of the label and method of an int8 dynamic-quantised variant (benchmark.quantize_int8);
#: every serving-precision variant (benchmark.variants) is suffixed ``-<variant>`` the same way.
INT8 = "-int8"
#: Tag of the tasks that use the accelerator (training, evaluation, benchmark): a Prefect
#: concurrency limit on it (`prefect concurrency-limit create nash-gpu N`) caps them per GPU.
GPU_TAG = "nash-gpu"
#: Between a candidate's label and the seed of its replicate: ``nash-k2@0.3~seed1``.
SEED_MARK = "~seed"


class CandidateSpec(BaseModel):
    """One candidate of the sweep: an arm's snapshot after ``stage`` targets (0 = no masks)."""

    label: str
    arm_index: int | None = None  # None: the teacher
    method: str
    stage: int = 0
    target: float | None = None
    decoder_layers: int | None = None  # None: all (teacher) or decided by masks (CoFi)
    quantized: bool = False  # a precision variant of the candidate labelled ``source_label``
    variant: str | None = None  # int8 / bf16 / fp16 (None with quantized: int8, older specs)
    seed: int | None = None  # a replicate trained under experiment.seeds' other seed; None: primary
    run_id: str | None = None

    @property
    def is_replicate(self) -> bool:
        """A copy of a candidate trained under another seed: measured for quality only (the
        primary, trained under experiment.seed, is the one benchmarked, selected and served)."""
        return self.seed is not None

    @property
    def primary_label(self) -> str:
        """The label of the candidate this one replicates (its own label for a primary)."""
        return self.label.split(SEED_MARK)[0]

    @property
    def arm_label(self) -> str:
        """The arm's label (``nash-k2`` of ``nash-k2@0.3-ct2-int8`` or ``nash-k2@0.3~seed1``)."""
        return self.source_label.split(SEED_MARK)[0].split("@")[0]

    @property
    def is_teacher(self) -> bool:
        """The baseline itself (its int8 variant is a candidate like any other)."""
        return self.arm_index is None and not self.quantized

    @property
    def source_label(self) -> str:
        return self.label.removesuffix(f"-{self.precision}") if self.quantized else self.label

    @property
    def precision(self) -> str | None:
        """The serving-precision variant (int8, bf16, fp16), None for a model as trained."""
        return (self.variant or "int8") if self.quantized else None

    def int8(self) -> CandidateSpec:
        """This candidate's int8 dynamic-quantised variant (same arm, stage and target)."""
        return self.variant_of("int8")

    def variant_of(self, variant: str) -> CandidateSpec:
        """This candidate served in another precision (same arm, stage and target)."""
        return self.model_copy(
            update={
                "label": f"{self.label}-{variant}",
                "method": f"{self.method}-{variant}",
                "quantized": True,
                "variant": variant,
                "run_id": None,
            }
        )


def arm_candidates(arm: ArmConfig, index: int, seed: int | None = None) -> list[CandidateSpec]:
    """Candidates of one arm in stage order: one per target (each continues the previous)
    or, for an arm without targets (SFT), the single shallow-decoder model. ``seed``: the
    replicates trained under that seed (labels ``<label>~seed<N>``)."""
    targets = list(arm.targets) or [None]
    mark = "" if seed is None else f"{SEED_MARK}{seed}"
    return [
        CandidateSpec(
            label=(arm.label if t is None else f"{arm.label}@{t:g}") + mark,
            arm_index=index,
            method=arm.method,
            stage=i + 1 if t is not None else 0,
            target=t,
            decoder_layers=arm.decoder_layers,
            seed=seed,
        )
        for i, t in enumerate(targets)
    ]


class SweepContext(BaseModel):
    """Everything a task needs to know about the sweep it belongs to."""

    workdir: str
    config: dict
    tracking_uri: str
    experiment_id: str
    sweep_run_id: str
    flow_run_id: str | None = None
    flow_run_name: str | None = None

    @cached_property
    def cfg(self) -> NashConfig:
        return NashConfig.model_validate(self.config)
