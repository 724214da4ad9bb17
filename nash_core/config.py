"""One typed schema for every nash-pipeline config (YAML), with ``--set`` overrides.

Every section rejects unknown keys, checks ranges, and cross-checks fields that depend on each
other. ``load_config`` returns a validated :class:`NashConfig` or raises :class:`ConfigError`
listing *every* problem as ``field.path: message``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from nash_core.errors import ConfigError  # raised here; importable from here as before


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- experiment / tracking
class ExperimentConfig(_Section):
    name: str = Field(..., min_length=1, description="Config name; shown in MLflow and Prefect.")
    mlflow_experiment: str | None = Field(
        None, description="MLflow experiment; default 'nash/<base model>/<dataset>'."
    )
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default MLFLOW_TRACKING_URI or SQLite in the workdir.",
    )
    seed: int = Field(0, ge=0)
    seeds: list[int] = Field(
        default_factory=list,
        description="Train every arm under each of these seeds (experiment.seed among them: "
        "it also seeds data and teacher, and its models are the ones served); quality is "
        "reported per seed and aggregated, and the selection requires the aggregate too. "
        "Empty: experiment.seed alone.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(
        None, ge=1, description="torch.set_num_threads; default torch's."
    )
    task_runner: Literal["threads", "sequential", "dask", "ray"] = "threads"
    max_concurrent_arms: int = Field(1, ge=1, description="Arms trained at the same time.")
    dask_address: str | None = Field(
        None, description="Existing Dask scheduler; default a local cluster."
    )
    dask_workers: int = Field(2, ge=1)
    ray_cpus: int = Field(
        2, ge=1, description="CPUs a local Ray instance offers (arms running at once)."
    )
    ray_object_store_mb: int = Field(
        256, ge=80, description="Object store of a local Ray instance, MiB (it holds only paths)."
    )
    train_processes: int = Field(
        1,
        ge=1,
        description="Data-parallel processes (one per GPU) for each training step "
        "(teacher, pruning stage, fine-tune); > 1 runs it under torchrun.",
    )

    @model_validator(mode="after")
    def _seeds(self):
        if self.seeds:
            if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
                raise ValueError(f"seeds must be distinct non-negative integers (got {self.seeds})")
            if self.seed not in self.seeds:
                raise ValueError(
                    f"seeds {self.seeds} must include experiment.seed ({self.seed}): its models "
                    f"are the ones served; add it, or set experiment.seed to one of them"
                )
        return self

    @property
    def replicate_seeds(self) -> list[int]:
        """The arms' training seeds besides ``seed`` (the replicates of every candidate)."""
        return [s for s in self.seeds if s != self.seed]


# --------------------------------------------------------------------------- data
class DemoCorpusConfig(_Section):
    num_dialogues: int = Field(20000, ge=100)
    seed: int = Field(0, ge=0)


class SplitFractions(_Section):
    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum(self):
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1 (got {total:g})")
        return self


class DataConfig(_Section):
    kind: Literal["demo", "hub", "local"] = Field(
        ..., description="demo: built-in offline corpus; hub: a Hugging Face dataset; local: files."
    )
    name: str | None = Field(
        None, description="Hub dataset id (kind=hub), e.g. 'knkarthick/samsum'."
    )
    config_name: str | None = Field(None, description="Hub dataset config, e.g. '3.0.0'.")
    revision: str | None = None
    files: dict[Literal["train", "validation", "test", "all"], str] | None = Field(
        None, description="Local files by split (jsonl/json/csv/parquet); 'all' + split_fractions."
    )
    splits: dict[Literal["train", "validation", "test"], str] = Field(
        default_factory=lambda: {"train": "train", "validation": "validation", "test": "test"},
        description="Names of the splits in the dataset.",
    )
    split_fractions: SplitFractions | None = Field(
        None, description="Split one 'all' file / the train split into train/validation/test."
    )
    source_column: str | None = Field(None, description="Column holding the input text.")
    target_column: str | None = Field(None, description="Column holding the reference summary.")
    source_prefix: str = Field("", description="Prepended to every source, e.g. 'summarize: '.")
    max_source_length: int = Field(512, ge=8)
    max_target_length: int = Field(128, ge=4)
    max_samples: dict[Literal["train", "validation", "test"], int] = Field(
        default_factory=dict, description="Cap on examples per split."
    )
    demo: DemoCorpusConfig = Field(default_factory=DemoCorpusConfig)

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "hub" and not self.name:
            raise ValueError("data.name is required when data.kind is 'hub'")
        if self.kind == "local" and not self.files:
            raise ValueError("data.files is required when data.kind is 'local'")
        if self.kind != "demo":
            missing = [c for c in ("source_column", "target_column") if not getattr(self, c)]
            if missing:
                raise ValueError(
                    f"missing dataset column mapping: set data.{' and data.'.join(missing)} "
                    "(the columns holding the input text and the summary)"
                )
        if self.files and "all" in self.files and self.split_fractions is None:
            self.split_fractions = SplitFractions()
        for split, n in self.max_samples.items():
            if n < 1:
                raise ValueError(f"data.max_samples.{split} must be >= 1 (got {n})")
        return self


# --------------------------------------------------------------------------- model
class DemoModelConfig(_Section):
    d_model: int = Field(256, ge=8)
    d_ff: int = Field(1024, ge=8)
    d_kv: int = Field(64, ge=4)
    num_heads: int = Field(4, ge=1)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(6, ge=1)
    feed_forward_proj: Literal["relu", "gated-gelu"] = "relu"
    vocab_size: int = Field(1000, ge=50, description="Upper bound; word-level vocab of the corpus.")
    dropout_rate: float = Field(0.1, ge=0, lt=1)


class ModelConfig(_Section):
    base: str = Field(..., description="'demo', a hub id (t5-base) or a local save_pretrained dir.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = False
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    demo: DemoModelConfig = Field(default_factory=DemoModelConfig)


# --------------------------------------------------------------------------- training
class TrainConfig(_Section):
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; or use epochs.")
    epochs: float | None = Field(None, gt=0)
    max_time_s: float | None = Field(None, gt=0, description="Stop after this many seconds.")
    batch_size: int = Field(16, ge=1)
    group_by_length: bool = Field(
        False,
        description=(
            "Batch examples of similar (source, target) length together (shuffled batches, each "
            "example once per epoch): less padding, faster steps."
        ),
    )
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    eval_every: int = Field(200, ge=1)
    eval_examples: int = Field(200, ge=1, description="Validation examples per evaluation.")
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(10, ge=1)
    max_bad_steps: int = Field(3, ge=1, description="Consecutive NaN/inf losses before stopping.")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (CPU always trains in fp32).")
    freeze_embeddings: bool = False

    @model_validator(mode="after")
    def _length(self):
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set max_steps or epochs")
        return self


class DistillConfig(_Section):
    task_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(0.5, ge=0, description="Prediction-layer KL weight.")
    temperature: float = Field(2.0, gt=0)
    layer_weight: float = Field(0.001, ge=0, description="Hidden-state distillation weight.")
    layer_map: Literal["aligned", "source"] = Field(
        "aligned",
        description=(
            "Which teacher layer each student layer's output is matched to. 'aligned': evenly "
            "spaced "
            "teacher layers, each paired with the closest student layer in order (CoFi's matching, "
            "any depths). 'source': the teacher layer the student layer was copied from (NASH's "
            "kept decoder layers, the same index in a masked encoder); 'aligned' where the origin "
            "is unknown."
        ),
    )


class TeacherConfig(_Section):
    path: str | None = Field(
        None, description="Use this fine-tuned teacher instead of training one."
    )
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=3, lr=3e-4))


Stack = Literal["encoder", "decoder"]


# --------------------------------------------------------------------------- arms
# One config class per compression method, each with that method's options; an arm is their
# union discriminated by ``method`` (nash_core/methods/ registers each method with its class).
class _ArmBase(_Section):
    """What every arm has: its sparsity targets, a name, per-arm step counts."""

    targets: list[float] = Field(default_factory=list, description="Increasing sparsity targets.")
    name: str | None = None
    stage_steps: int | None = Field(
        None,
        ge=1,
        description="This arm's optimizer steps per pruning stage (default "
        "pruning.stage.train.max_steps): e.g. a shorter CoFi arm.",
    )
    finetune_steps: int | None = Field(
        None,
        ge=1,
        description="This arm's final fine-tune steps (default finetune.train.max_steps).",
    )

    @field_validator("targets")
    @classmethod
    def _targets(cls, targets: list[float]) -> list[float]:
        for i, t in enumerate(targets):
            if not 0.0 <= t < 1.0:
                raise ValueError(f"sparsity target {t} (item {i}) is outside [0, 1)")
        if any(b <= a for a, b in zip(targets, targets[1:])):
            raise ValueError(f"targets must be strictly increasing (got {targets})")
        return targets

    def _needs_targets(self) -> None:
        if not self.targets:
            raise ValueError(f"targets must list at least one sparsity target for '{self.method}'")

    @property
    def start_arm(self) -> str | None:
        """The label of an earlier arm whose final model this arm starts from (None: the
        teacher)."""
        return None

    @property
    def uses_hidden_mask(self) -> bool:
        """Whether the arm prunes the hidden dimension (CoFi's ``hidden``)."""
        return False

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.start_arm:
            return f"{self.start_arm}+{self.method}"
        k = f"-k{self.decoder_layers}" if self.decoder_layers is not None else ""
        return f"{self.method}{k}"

    def identity(self) -> dict:
        """What of the arm shapes its student (part of its stages' cache keys): the method and
        its options; not its name or targets (each stage keys its own), nor the arm it starts
        from (that start's key is)."""
        out = self.model_dump(
            mode="json", exclude={"name", "targets", "stage_steps", "finetune_steps", "from_arm"}
        )
        return out if self.stage_steps is None else {**out, "stage_steps": self.stage_steps}


class _LayerChoice(_Section):
    """Which decoder layers a student keeps (nash, sft; magnitude optionally)."""

    layer_selection: Literal["uniform", "low", "high", "custom"] = "uniform"
    custom_layers: list[int] | None = None

    def _check_layers(self) -> None:
        if self.layer_selection == "custom":
            if not self.custom_layers:
                raise ValueError("custom_layers is required when layer_selection is 'custom'")
            if self.decoder_layers is not None and len(self.custom_layers) != self.decoder_layers:
                raise ValueError("custom_layers must list exactly decoder_layers indices")
            if sorted(set(self.custom_layers)) != self.custom_layers or min(self.custom_layers) < 0:
                raise ValueError("custom_layers must be distinct, increasing and >= 0")


class NashArm(_ArmBase, _LayerChoice):
    """NASH: k decoder layers kept, encoder heads and FFN units pruned to each target."""

    method: Literal["nash"]
    decoder_layers: int = Field(..., ge=1, description="k decoder layers kept.")

    @model_validator(mode="after")
    def _check(self):
        self._check_layers()
        self._needs_targets()
        return self


class SftArm(_ArmBase, _LayerChoice):
    """SFT: k decoder layers kept, nothing masked (one distillation fine-tune)."""

    method: Literal["sft"]
    decoder_layers: int = Field(..., ge=1, description="k decoder layers kept.")

    @model_validator(mode="after")
    def _check(self):
        self._check_layers()
        if self.targets:
            raise ValueError("sft prunes no encoder units: leave targets empty")
        return self


class CofiArm(_ArmBase):
    """CoFi: full decoder depth; heads, FFN units and whole sub-layers of both stacks and the
    hidden dimension masked to one model-wide target."""

    method: Literal["cofi"]
    hidden: bool = Field(
        True,
        description="CoFi's hidden-dimension mask (one gate per d_model dimension, shared by "
        "the whole model).",
    )

    @property
    def decoder_layers(self) -> None:
        return None  # decided by the masks

    @property
    def uses_hidden_mask(self) -> bool:
        return self.hidden

    @model_validator(mode="after")
    def _check(self):
        self._needs_targets()
        return self


class MagnitudeConfig(_Section):
    """Unstructured magnitude pruning (``method: magnitude``; nash_core/methods/magnitude.py)."""

    scope: Literal["global", "per_layer"] = Field(
        "global",
        description="'global': one threshold over every pruned weight of the chosen stacks; "
        "'per_layer': each linear weight pruned to the target on its own.",
    )
    schedule: Literal["cubic", "one_shot"] = Field(
        "cubic",
        description="'cubic': Zhu & Gupta (2017), s_t = s_f + (s_i - s_f)(1 - t/n)^3 over "
        "pruning.stage.target_warmup_steps (n, at most the stage's steps); 'one_shot': the "
        "whole target before the first step.",
    )
    update_every: int = Field(1, ge=1, description="Steps between mask updates of the ramp.")
    stacks: list[Stack] = Field(
        default_factory=lambda: ["encoder", "decoder"],
        description="Stacks whose nn.Linear weights are pruned (the LM head and embeddings "
        "never are).",
    )

    @field_validator("stacks")
    @classmethod
    def _stacks(cls, stacks: list[str]) -> list[str]:
        if not stacks or len(set(stacks)) != len(stacks):
            raise ValueError(f"stacks must name encoder and/or decoder once each (got {stacks})")
        return stacks


class MagnitudeArm(_ArmBase, _LayerChoice):
    """Unstructured magnitude pruning, on the teacher (optionally with k decoder layers) or on
    top of an earlier arm's final model (``from_arm``)."""

    method: Literal["magnitude"]
    decoder_layers: int | None = Field(
        None, ge=1, description="k decoder layers kept (default all; not with from_arm)."
    )
    magnitude: MagnitudeConfig = Field(
        default_factory=MagnitudeConfig,
        description="Options of method 'magnitude' (default: global, cubic, both stacks).",
    )
    from_arm: str | None = Field(
        None,
        description="Start from the final model of this earlier arm's last target (its label, "
        "e.g. 'nash-k2'): unstructured pruning on top of NASH.",
    )

    @property
    def start_arm(self) -> str | None:
        return self.from_arm

    @model_validator(mode="after")
    def _check(self):
        if self.from_arm and self.decoder_layers is not None:
            raise ValueError(
                "decoder_layers: a magnitude arm with from_arm keeps the depth of the arm it "
                "starts from; remove decoder_layers"
            )
        self._check_layers()
        self._needs_targets()
        return self


#: The arm classes, one per registered method (nash_core/methods/ checks they match).
ARM_CLASSES = (NashArm, SftArm, CofiArm, MagnitudeArm)
ArmConfig = Annotated[NashArm | SftArm | CofiArm | MagnitudeArm, Field(discriminator="method")]
_ARM = TypeAdapter(ArmConfig)


def arm_config(raw: dict | BaseModel) -> NashArm | SftArm | CofiArm | MagnitudeArm:
    """An arm from its mapping (``{"method": "nash", ...}``), validated like the YAML."""
    return _ARM.validate_python(raw.model_dump() if isinstance(raw, BaseModel) else raw)


class PruneStageConfig(_Section):
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=1000, lr=3e-5))
    mask_lr: float = Field(0.01, gt=0)
    lagrangian_lr: float = Field(0.01, gt=0, description="Multipliers are trained by ascent.")
    target_warmup_steps: int = Field(
        500, ge=0, description="Steps over which the target ramps from the previous one."
    )
    sparsity_epsilon: float = Field(
        0.02, ge=0, description="Best checkpoint only within this distance of the target."
    )
    head_mask_init: float = 10.0
    ffn_mask_init: float = 0.0
    hidden_mask_init: float = Field(
        10.0, description="log_alpha mean of the hidden-dimension mask (cofi)."
    )
    distill: DistillConfig = Field(default_factory=DistillConfig)


class PruningConfig(_Section):
    arms: list[ArmConfig] = Field(
        ..., description="Arms to try: one config per arm, its class chosen by its method."
    )
    stage: PruneStageConfig = Field(default_factory=PruneStageConfig)

    @model_validator(mode="after")
    def _check(self):
        if not self.arms:
            raise ValueError(
                "arms is empty: list at least one arm (method, decoder_layers, targets)"
            )
        labels = [a.label for a in self.arms]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"arm labels must be unique; repeated: {dup} (set arms[i].name)")
        for i, arm in enumerate(self.arms):
            if arm.start_arm and arm.start_arm not in labels[:i]:
                raise ValueError(
                    f"arms[{i}].from_arm '{arm.start_arm}' is not the label of an earlier arm "
                    f"(earlier arms: {labels[:i]})"
                )
        return self


class FinetuneConfig(_Section):
    enabled: bool = True
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1, lr=3e-5))
    distill: DistillConfig = Field(
        default_factory=lambda: DistillConfig(kd_weight=0.5, layer_weight=0.0)
    )


# --------------------------------------------------------------------------- evaluation
class EvaluationConfig(_Section):
    num_beams: int = Field(1, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    min_new_tokens: int = Field(0, ge=0)
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    num_examples: int | None = Field(
        None, ge=1, description="Test examples; default the whole split."
    )
    bootstrap_samples: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)
    exact_match: bool = True
    predictions_sample: int = Field(50, ge=0)
    rouge_tokenizer: Literal["default", "unicode"] = Field(
        "default",
        description="'default': rouge-score's [a-z0-9] tokenizer (English); 'unicode': "
        "any script (mT5, non-Latin text), CJK scored per character.",
    )

    @model_validator(mode="after")
    def _check(self):
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must be <= max_new_tokens")
        return self


Variant = Literal[
    "int8",
    "bf16",
    "fp16",
    "ct2-fp32",
    "ct2-int8",
    "ct2-int8-bf16",
    "ct2-bf16",
    "ct2-fp16",
    "ct2-int8-fp16",
]


class BenchmarkConfig(_Section):
    enabled: bool = True
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8])
    num_inputs: int = Field(16, ge=1, description="Fixed test inputs used for timing.")
    warmup: int = Field(2, ge=0)
    repeats: int = Field(10, ge=1)
    fixed_new_tokens: int | None = Field(64, ge=1, description="Also time this fixed length.")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    price_per_hour: float = Field(0.0, ge=0, description="Hardware price (USD/h) for cost metrics.")
    hardware_name: str | None = None
    bootstrap_samples: int = Field(
        2000, ge=100, description="Bootstrap resamples of the rounds for latency intervals."
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="Coverage of the speedup and latency intervals."
    )
    extra_rounds: int = Field(
        30,
        ge=0,
        description=(
            "Adaptive rounds: when the fastest qualifying candidates' speedup intervals overlap "
            "at selection.batch_size, time just those (and the teacher) for up to this many more "
            "interleaved rounds, until they separate. 0 turns it off."
        ),
    )
    max_extra_seconds: float = Field(
        60.0, ge=0, description="Wall-clock budget of the adaptive rounds (the clock's seconds)."
    )
    quantize_int8: bool = Field(
        False,
        description=(
            "Also evaluate, benchmark and log an int8 dynamic-quantised variant ('-int8') of the "
            "teacher and of every candidate; they compete for champion. CPU serving only: with it "
            "the whole benchmark runs on CPU. An alias of variants: [int8]."
        ),
    )
    variants: list[Variant] = Field(
        default_factory=list,
        description=(
            "Serving-precision variants of the teacher and of every candidate, each evaluated, "
            "benchmarked and logged ('-int8', '-bf16', '-fp16'): int8 dynamic quantisation (CPU "
            "only: the whole benchmark then runs on CPU), bf16 weights and activations, fp16 "
            "(CUDA only). 'ct2-<precision>' serves the candidate converted to CTranslate2 "
            "(ct2-fp32, ct2-int8 everywhere; ct2-int8-bf16 / ct2-bf16 where the CPU has bf16; "
            "ct2-fp16 / ct2-int8-fp16 on CUDA); see docs/serving-runtimes.md."
        ),
    )

    @model_validator(mode="after")
    def _check(self):
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError("batch_sizes must be a non-empty list of integers >= 1")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must not repeat (got {self.variants})")
        return self

    @property
    def all_variants(self) -> list[str]:
        """``variants``, with int8 first when the older ``quantize_int8`` asks for it."""
        extra = ["int8"] if self.quantize_int8 and "int8" not in self.variants else []
        return extra + list(self.variants)


#: The keys ``selection.tie_break`` may name (``nash_core.selection.TIE_BREAKS`` defines each).
TIE_BREAK_KEYS = ("retention_low", "rougeL", "params", "params_nonzero", "served_mb", "speedup")


class SelectionConfig(_Section):
    """Who may replace the teacher: quality as a fraction of the teacher's ROUGE-L, twice."""

    min_retention: float = Field(
        0.95,
        gt=0,
        le=1.5,
        description=("Point estimate: candidate ROUGE-L / teacher ROUGE-L must be at least this."),
    )
    min_retention_low: float = Field(
        0.95,
        gt=0,
        le=1.5,
        description=(
            "Confidence bound: 1 + (low end of the paired-bootstrap interval of candidate - "
            "teacher "
            "ROUGE-L) / teacher ROUGE-L must be at least this (0.95: the test set cannot show the "
            "candidate keeps less than 95%)."
        ),
    )
    latency_metric: str = "latency_p50_ms"
    batch_size: int = Field(1, ge=1, description="Batch size whose latency ranks candidates.")
    tie_break: list[str] = Field(
        default_factory=lambda: ["retention_low", "params", "served_mb"],
        description=(
            "Candidates tied on speed (speedup intervals overlapping the fastest's) are ordered "
            "by these keys, first decisive key wins: retention_low (higher), rougeL (higher), "
            "params (fewer), params_nonzero (fewer), served_mb (smaller), speedup (higher point "
            "value); the label settles what is still equal."
        ),
    )

    @field_validator("tie_break")
    @classmethod
    def _known_tie_breaks(cls, keys: list[str]) -> list[str]:
        unknown = [k for k in keys if k not in TIE_BREAK_KEYS]
        if unknown:
            raise ValueError(f"unknown tie_break key(s) {unknown}; known: {sorted(TIE_BREAK_KEYS)}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"tie_break keys must not repeat (got {keys})")
        return keys

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "max_drop" in data:
            raise ValueError(
                "selection.max_drop (an absolute ROUGE-L drop) was replaced by "
                "selection.min_retention_low, the retention's lower confidence bound as a fraction "
                "of the teacher: max_drop 0.03 on a teacher at ROUGE-L 0.86 is min_retention_low "
                "0.965 (1 - 0.03 / 0.86); remove max_drop"
            )
        return data


class RegistryConfig(_Section):
    enabled: bool = True
    model_name: str | None = Field(
        None, description="Registered model; default '<experiment name>'."
    )
    alias: str = Field(
        "champion", pattern=r"^[A-Za-z0-9_-]+$", description="Alias of the model in service."
    )
    challenger_alias: str = Field(
        "challenger",
        pattern=r"^[A-Za-z0-9_-]+$",
        description=(
            "Alias a sweep gives its selected model; it becomes the champion through the "
            "promotion gate (auto) or `nash promote` (manual)."
        ),
    )
    promotion: Literal["auto", "manual"] = Field(
        "auto",
        description=(
            "'auto': at the end of a sweep the challenger replaces the champion if the promotion "
            "gate passes (current champion re-evaluated on the same test examples: the challenger "
            "must qualify under the selection policy with the champion as the baseline, and not be "
            "slower); 'manual': the gate is measured and logged, `nash promote VERSION` decides."
        ),
    )
    max_slowdown: float = Field(
        0.05,
        ge=0,
        description=(
            "Promotion gate: how much slower than the champion (a fraction of its latency, timed "
            "interleaved) the challenger may be."
        ),
    )

    @model_validator(mode="after")
    def _aliases(self):
        if self.alias == self.challenger_alias:
            raise ValueError("registry.alias and registry.challenger_alias must differ")
        return self


class NashConfig(_Section):
    experiment: ExperimentConfig
    data: DataConfig
    model: ModelConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    pruning: PruningConfig
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _cross(self):
        if self.model.base == "demo":
            if self.data.kind != "demo":
                raise ValueError(
                    "model.base 'demo' builds its tokenizer from the demo corpus: "
                    "set data.kind: demo"
                )
        if self.benchmark.enabled and self.selection.batch_size not in self.benchmark.batch_sizes:
            raise ValueError(
                f"selection.batch_size {self.selection.batch_size} is not in "
                f"benchmark.batch_sizes {self.benchmark.batch_sizes}"
            )
        self._check_runtime_variants()
        if "fp16" in self.benchmark.all_variants:
            if "int8" in self.benchmark.all_variants:
                raise ValueError(
                    "benchmark.variants: fp16 runs on CUDA only and int8 on CPU only, and one "
                    "benchmark compares all its models on one device: drop one of them"
                )
            if self.experiment.device == "cpu" or (
                self.experiment.device == "auto" and not _cuda_available()
            ):
                raise ValueError(
                    "benchmark.variants: fp16 is served on CUDA only and this config runs on CPU "
                    f"(experiment.device '{self.experiment.device}'): use bf16 on CPU"
                )
        return self

    def _check_runtime_variants(self) -> None:
        """A variant of another runtime (``ct2-int8``...) must run on this config's device."""
        from nash_core.runtimes.base import split_variant  # the package fills the registry

        cuda = self.experiment.device == "cuda" or (
            self.experiment.device == "auto" and _cuda_available()
        )
        if "int8" in self.benchmark.all_variants:  # torch int8 puts the benchmark on CPU
            cuda = False
        device = "cuda" if cuda else "cpu"
        for variant in self.benchmark.all_variants:
            runtime, precision = split_variant(variant)
            if runtime.name == "pytorch" or precision in runtime.compute_types(device):
                continue
            can = ", ".join(runtime.prefix + p for p in runtime.compute_types(device)) or "none"
            raise ValueError(
                f"benchmark.variants: {variant} cannot run on this machine's {device} "
                f"({runtime.name} supports here: {can})"
            )

    # ------------------------------------------------------------------ helpers
    def experiment_name(self) -> str:
        if self.experiment.mlflow_experiment:
            return self.experiment.mlflow_experiment
        data = self.data.name or ("demo-dialogues" if self.data.kind == "demo" else "local")
        base = self.model.base if self.model.base == "demo" else Path(self.model.base).name
        return f"nash/{base}/{data.split('/')[-1]}"

    def stage_config(self, arm_index: int) -> PruneStageConfig:
        """``pruning.stage`` with the arm's own step count, if it sets one."""
        arm, stage = self.pruning.arms[arm_index], self.pruning.stage
        if arm.stage_steps is None:
            return stage
        return stage.model_copy(
            update={
                "train": stage.train.model_copy(
                    update={"max_steps": arm.stage_steps, "epochs": None}
                )
            }
        )

    def finetune_config(self, arm_index: int) -> FinetuneConfig:
        """``finetune`` with the arm's own step count, if it sets one."""
        arm, ft = self.pruning.arms[arm_index], self.finetune
        if arm.finetune_steps is None:
            return ft
        return ft.model_copy(
            update={
                "train": ft.train.model_copy(
                    update={"max_steps": arm.finetune_steps, "epochs": None}
                )
            }
        )

    def registered_model_name(self) -> str:
        return self.registry.model_name or f"nash-{self.experiment.name}"

    def section_hash(self, *paths: str) -> str:
        """Stable hash of some sections (``'pruning.stage'``, ``'data'``...), for cache keys."""
        dump = self.model_dump(mode="json")
        picked = {}
        for p in paths:
            node: Any = dump
            for part in p.split("."):
                node = node[int(part)] if isinstance(node, list) else node[part]
            picked[p] = node
        blob = json.dumps(picked, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def decoder_layer_problems(arms: list[dict], num_decoder_layers: int) -> list[str]:
    """Arms that keep more decoder layers than the base model has (raw dicts or ArmConfigs)."""
    problems = []
    for i, arm in enumerate(arms):
        arm = arm.model_dump() if isinstance(arm, BaseModel) else arm
        if not isinstance(arm, dict):
            continue
        k, custom = arm.get("decoder_layers"), arm.get("custom_layers")
        if isinstance(k, int) and k > num_decoder_layers:
            problems.append(
                f"pruning.arms.{i}.decoder_layers: keeps {k} decoder layers but "
                f"the base model has {num_decoder_layers}"
            )
        if (
            isinstance(custom, list)
            and custom
            and all(isinstance(c, int) for c in custom)
            and max(custom) >= num_decoder_layers
        ):
            problems.append(
                f"pruning.arms.{i}.custom_layers: index {max(custom)} does not exist "
                f"(the base model has {num_decoder_layers} decoder layers)"
            )
    return problems


def check_decoder_layers(cfg: NashConfig, num_decoder_layers: int) -> None:
    """Cross-check arms against the base model's decoder depth once it is known."""
    problems = decoder_layer_problems(cfg.pruning.arms, num_decoder_layers)
    if problems:
        raise ConfigError("config", problems)


def _raw_depth_problems(raw: dict) -> list[str]:
    """Depth check on the raw dict, so it is reported even when other fields are invalid."""
    try:
        model, arms = raw.get("model") or {}, (raw.get("pruning") or {}).get("arms") or []
        if model.get("base") != "demo" or not isinstance(arms, list):
            return []
        depth = (model.get("demo") or {}).get("decoder_layers", DemoModelConfig().decoder_layers)
        return decoder_layer_problems(arms, depth) if isinstance(depth, int) else []
    except AttributeError:
        return []


# --------------------------------------------------------------------------- loading
def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"--set {item!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a raw config dict."""
    data = copy.deepcopy(data)
    for item in overrides or []:
        parts, value = _parse_override(item)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                idx = int(part)
                node = node[idx]
                continue
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ValueError(f"--set {item!r}: {'.'.join(parts[:-1])} is not a section")
    return data


_ARM_TAGS = {a.model_fields["method"].annotation.__args__[0]: a for a in ARM_CLASSES}


def _arm_message(method: str, e: dict) -> str | None:
    """Messages about an arm's keys that name its method (None: pydantic's own is clear)."""
    key = e["loc"][-1]
    if e["type"] == "extra_forbidden":
        owners = [m for m, cls in _ARM_TAGS.items() if key in cls.model_fields]
        if owners:
            return f"an option of method {' / '.join(map(repr, owners))}, not of {method!r}"
        options = sorted(set(_ARM_TAGS[method].model_fields) - {"method"})
        return f"unknown key for method {method!r} (its options: {', '.join(options)})"
    if e["type"] == "missing":
        return f"required for method {method!r}"
    return None


def _arm_loc(loc: tuple) -> tuple[tuple, str | None]:
    """``loc`` without the union's tag (``pruning.arms.0.nash.targets`` -> ``...0.targets``)
    and the arm's method, when the error is inside an arm."""
    for i in range(2, len(loc)):
        if loc[i - 2] == "arms" and isinstance(loc[i - 1], int) and loc[i] in _ARM_TAGS:
            return loc[:i] + loc[i + 1 :], loc[i]
    return loc, None


def _format_errors(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc, method = _arm_loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if method is not None and len(loc) > 3:
            msg = _arm_message(method, e) or msg
        elif e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/demo.yaml for every key)"
        elif e["type"] in ("union_tag_not_found", "union_tag_invalid"):
            loc = (*loc, "method")
            tag = (e.get("ctx") or {}).get("tag")
            msg = f"unknown method {tag!r}" if tag is not None else "missing"
            msg += f"; one of {', '.join(_ARM_TAGS)}"
        text = ".".join(str(x) for x in loc)
        out.append(f"{text}: {msg}" if text else msg)
    return out


def validate_config(raw: Any, source: str = "<config>") -> NashConfig:
    if not isinstance(raw, dict):
        raise ConfigError(
            source, ["the file must hold a YAML mapping (sections experiment, data, ...)"]
        )
    problems = _raw_depth_problems(raw)
    try:
        cfg = NashConfig.model_validate(raw)
    except ValidationError as err:
        problems = _format_errors(err) + problems
        cfg = None
    if problems:
        raise ConfigError(source, problems)
    return cfg


def _read_yaml(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), [f"file not found: {p}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read {p}: {exc}"]) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [f"not valid YAML: {exc}"]) from None


def merge_config(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key; other values (lists too) replace."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The raw config mapping of ``path``, with ``extends: OTHER.yaml`` resolved.

    ``extends`` names another config file (relative to this file's folder); this file's keys
    are merged on top of it (sections key by key; lists such as ``pruning.arms`` replace).
    """
    p = Path(path)
    data = _read_yaml(p)
    if not isinstance(data, dict) or "extends" not in data:
        return data
    parent = data.pop("extends")
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(str(p), ["extends: must name a config file, e.g. extends: demo.yaml"])
    parent_path = (p.parent / parent).resolve()
    chain = (*_chain, p.resolve())
    if parent_path in chain:
        cycle = " -> ".join(c.name for c in (*chain, parent_path))
        raise ConfigError(str(p), [f"extends: {parent!r} makes a cycle ({cycle})"])
    if not parent_path.is_file():
        raise ConfigError(
            str(p),
            [
                f"extends: {parent!r} not found (looked for {parent_path}; the path is "
                "relative to this config's folder)"
            ],
        )
    base = load_raw(parent_path, chain)
    if not isinstance(base, dict):
        raise ConfigError(str(parent_path), ["the file must hold a YAML mapping"])
    return merge_config(base, data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> NashConfig:
    raw = load_raw(path)
    try:
        raw = apply_overrides(raw, overrides)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ConfigError(str(path), [str(exc)]) from None
    return validate_config(raw, str(path))
