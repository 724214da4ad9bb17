"""``nash init``: from a model and a dataset to a commented config that ``nash validate`` accepts.

What it reads, and nothing more: the model's ``config.json`` (architecture and decoder depth;
for a local directory also that safetensors weights and a tokenizer are there), the data files
(CSV / JSONL / JSON / Parquet, or a Hugging Face dataset) for their columns, row counts and text
lengths, and the model's tokenizer to measure those lengths in tokens. From that it proposes:

- arms that fit the depth: NASH at two depths (about a quarter of the decoder layers, and one
  more), SFT at the lower depth (the control that says what the narrow encoder costs) and CoFi;
- step counts from the number of training rows (one epoch per pruning stage and per fine-tune,
  three for a teacher that is trained), and with a time budget a ``max_time_s`` per training
  step (this machine's speed is not known before it trains, so the budget caps, it does not
  size);
- serving-precision variants for the machine it runs on (int8 and bf16 on a CPU, bf16 and fp16
  with CUDA), evaluated and benchmarked like every other candidate.

Every problem is a :class:`~nash_core.errors.NashError` naming the culprit (the CLI: exit 2, one
line) and is found before anything is written; the config is written to a temporary file,
validated with the same schema as ``nash validate``, then renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nash_core.errors import ConfigError, DataError, ModelError, NashError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
# (source, target) column names of common summarisation datasets, in order of preference
KNOWN_PAIRS = (
    ("dialogue", "summary"),
    ("document", "summary"),
    ("article", "highlights"),
    ("article", "summary"),
    ("text", "summary"),
    ("content", "summary"),
    ("source", "target"),
    ("input", "output"),
    ("input_text", "target_text"),
    ("src", "tgt"),
    ("text", "target"),
)
SPLIT_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval"),
}
MIN_ROWS = 20  # below this the 80/10/10 cut leaves a test split of one or two rows
LENGTH_SAMPLE = 1000  # rows whose token lengths are measured
Ask = Callable[[str, Sequence[str]], str]
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none"}


@dataclass(frozen=True)
class Family:
    """What differs between the supported architectures, as in the shipped recipes."""

    label: str
    recipe: str  # the configs/ recipe these settings come from
    source_prefix: str
    teacher_lr: float
    lr: float
    batch_size: int
    grad_accum: int
    rouge_tokenizer: str
    max_source_length: int


FAMILIES = {
    "t5": Family("T5", "samsum-t5-base.yaml", "summarize: ", 3e-4, 3e-5, 16, 1, "default", 512),
    "t5-v1.1": Family(
        "T5 v1.1 / Flan-T5",
        "samsum-flan-t5-base.yaml",
        "summarize: ",
        1e-4,
        3e-5,
        16,
        1,
        "default",
        512,
    ),  # fmt: skip
    "mt5": Family("mT5", "xlsum-mt5-base.yaml", "summarize: ", 5e-4, 1e-4, 8, 2, "unicode", 512),
    "bart": Family("BART", "xsum-bart-base.yaml", "", 5e-5, 3e-5, 32, 1, "default", 1024),
}
SUPPORTED = "T5, T5 v1.1 / Flan-T5, mT5 and BART"


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ModelFacts:
    ref: str  # absolute local directory, or the hub id as given
    local: bool
    family: str  # a key of FAMILIES
    model_type: str
    encoder_layers: int
    decoder_layers: int


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or ref in (".", "..")


def _local_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelError(
            f"--model: '{path}' is not a seq2seq model directory: it has no config.json "
            "(expected a directory written by save_pretrained)"
        )
    try:
        raw = json.loads(cfg_file.read_text())
    except (ValueError, OSError) as exc:
        raise ModelError(f"--model: cannot read {cfg_file} ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"--model: {cfg_file} is not a JSON object")
    return raw


def _hub_config(ref: str) -> dict:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref).to_dict()
    except Exception as exc:  # offline, unknown id, unknown model type: one message
        raise ModelError(
            f"--model: '{ref}' is neither a local directory nor a hub model whose config can be "
            f"read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); give "
            "a save_pretrained directory, or go online / have the model in the Hugging Face cache"
        ) from exc


def model_family(raw: dict, ref: str) -> str:
    """``t5`` / ``t5-v1.1`` / ``mt5`` / ``bart`` from a config.json, or a ModelError."""
    model_type = raw.get("model_type")
    if model_type in ("bart", "mt5"):
        return model_type
    if model_type == "t5":
        gated = str(raw.get("feed_forward_proj", "relu")).startswith("gated")
        return "t5-v1.1" if gated or raw.get("is_gated_act") else "t5"
    if raw.get("is_encoder_decoder"):
        raise ModelError(
            f"--model: '{ref}' is a '{model_type}' encoder-decoder, an architecture nash does "
            f"not support; supported: {SUPPORTED}"
        )
    raise ModelError(
        f"--model: '{ref}' is not a seq2seq model (model_type '{model_type}', no "
        f"encoder-decoder); nash compresses {SUPPORTED}"
    )


def _depths(raw: dict, family: str) -> tuple[int, int]:
    if family == "bart":
        return int(raw.get("encoder_layers", 0)), int(raw.get("decoder_layers", 0))
    enc = int(raw.get("num_layers", 0))
    return enc, int(raw.get("num_decoder_layers") or enc)


def detect_model(ref: str) -> ModelFacts:
    """Architecture and depths of a local directory or a hub id (see the module docstring)."""
    from nash_core.base_model import check_local_model_dir

    path = Path(ref).expanduser()
    local = path.is_dir()
    if not local and _looks_local(ref):
        raise ModelError(f"--model: directory '{ref}' does not exist")
    raw = _local_config(path) if local else _hub_config(ref)
    family = model_family(raw, ref)
    encoder_layers, decoder_layers = _depths(raw, family)
    if decoder_layers < 1:
        raise ModelError(f"--model: '{ref}' has no decoder layers in its config.json")
    if local:
        try:
            check_local_model_dir(path)  # safetensors present and whole, a tokenizer
        except ModelError as exc:  # the same check as `nash run`, named after this flag
            raise ModelError(str(exc).replace("model.base: ", "--model: ", 1)) from None
    return ModelFacts(
        str(path.resolve()) if local else ref,
        local,
        family,
        str(raw["model_type"]),
        encoder_layers,
        decoder_layers,
    )


# --------------------------------------------------------------------------- the data
@dataclass
class DataFacts:
    kind: str  # local / hub
    files: dict[str, str] | None  # split (or "all") -> absolute path
    name: str | None  # hub dataset id
    splits: dict[str, str] | None  # hub: our split -> the dataset's
    tables: dict = field(repr=False, default_factory=dict)  # split/all -> pandas DataFrame
    source_column: str = ""
    target_column: str = ""

    @property
    def cut(self) -> bool:
        """One table cut 80/10/10 into train / validation / test (data.split_fractions)."""
        return "all" in self.tables

    def rows(self, split: str) -> int:
        if self.cut:
            n = len(self.tables["all"])
            return int(n * {"train": 0.8, "validation": 0.1, "test": 0.1}[split])
        return len(self.tables[split])


def _read_table(path: Path):
    import pandas as pd

    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"--data: '{path}' has an unsupported extension; use one of {sorted(FORMATS)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"--data: '{path}' is empty")
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=fmt == "jsonl", dtype=False)
    except Exception as exc:  # pandas raises many types for a malformed file
        raise DataError(f"--data: cannot read '{path}' as {fmt} ({type(exc).__name__}: {exc})")


def _split_of(path: Path) -> str | None:
    words = set(re.split(r"[^a-z]+", path.stem.lower()))
    hits = [split for split, names in SPLIT_NAMES.items() if words & set(names)]
    return hits[0] if len(hits) == 1 else None


def _assign_splits(paths: list[Path]) -> dict[str, Path]:
    if len(paths) == 1:
        return {"all": paths[0]}
    by_split: dict[str, Path] = {}
    for p in paths:
        split = _split_of(p)
        if split is None or split in by_split:
            raise DataError(
                f"--data: cannot tell which split '{p.name}' is; with several files name them "
                "by split (train / validation / test in the file names), or give one file "
                "(cut 80/10/10)"
            )
        by_split[split] = p
    missing = [s for s in SPLIT_NAMES if s not in by_split]
    if missing:
        raise DataError(
            f"--data: no file for split(s) {missing}; give train, validation and test files, or "
            "one file (cut 80/10/10)"
        )
    return by_split


def _hub_tables(name: str) -> tuple[dict, dict[str, str]]:
    import datasets

    try:
        ds = datasets.load_dataset(name)
    except Exception as exc:  # offline, unknown id, no data files
        raise DataError(
            f"--data: '{name}' is neither a local file nor a hub dataset that can be loaded "
            f"({type(exc).__name__}); give CSV / JSONL / Parquet files, or go online / have "
            "the dataset in the Hugging Face cache"
        ) from exc
    ours = {s: next((n for n in names if n in ds), None) for s, names in SPLIT_NAMES.items()}
    if ours["train"] and ours["validation"] and ours["test"]:
        return {s: ds[n].to_pandas() for s, n in ours.items()}, dict(ours)
    first = ours["train"] or sorted(ds)[0]
    return {"all": ds[first].to_pandas()}, {"train": first}


def read_data(data: Sequence[str]) -> DataFacts:
    """The tables of local files (one = cut 80/10/10, or one per split) or of a hub dataset."""
    if not data:
        raise DataError("--data: give at least one file or a hub dataset id")
    paths = [Path(d).expanduser() for d in data]
    if len(data) == 1 and not paths[0].exists() and not _looks_local(data[0]):
        if not paths[0].suffix:  # a hub id such as knkarthick/samsum
            tables, splits = _hub_tables(data[0])
            return DataFacts("hub", None, data[0], splits, tables)
    for p in paths:
        if not p.is_file():
            raise DataError(f"--data: file '{p}' does not exist")
    files = _assign_splits(paths)
    tables = {split: _read_table(p) for split, p in files.items()}
    files_abs = {split: str(p.resolve()) for split, p in files.items()}
    return DataFacts("local", files_abs, None, None, tables)


def _is_text(value) -> bool:
    """A non-empty string that is not a number (CSV columns are read as strings)."""
    return isinstance(value, str) and bool(value.strip()) and not NUMBER.fullmatch(value.strip())


def _text_share(series) -> float:
    """The fraction of text values (see _is_text) among the first 200 rows."""
    head = series.head(200)
    if len(head) == 0:
        return 0.0
    return sum(map(_is_text, head)) / len(head)


def text_columns(table) -> list[str]:
    return [str(c) for c in table.columns if _text_share(table[c]) >= 0.9]


def _mean_len(table, col: str) -> float:
    return float(table[col].head(500).map(lambda v: len(str(v))).mean())


def _guess_pair(table, texts: list[str]) -> tuple[str, str] | None:
    for src, tgt in KNOWN_PAIRS:
        if src in texts and tgt in texts:
            return src, tgt
    if len(texts) == 2:  # the longer one is the source
        a, b = sorted(texts, key=lambda c: -_mean_len(table, c))
        return a, b
    return None


def _check_column(facts: DataFacts, role: str, col: str) -> None:
    for split, table in facts.tables.items():
        where = facts.files[split] if facts.files else f"{facts.name} ({split})"
        if col not in table.columns:
            raise DataError(
                f"--{role}-column: '{where}' has no column '{col}' (its columns: "
                f"{', '.join(map(str, table.columns))})"
            )
        if _text_share(table[col]) < 0.9:
            raise DataError(
                f"--{role}-column: column '{col}' of '{where}' does not hold text (most values "
                "are empty or not strings)"
            )


def choose_columns(
    facts: DataFacts, source: str | None, target: str | None, ask: Ask | None = None
) -> tuple[str, str]:
    """The source and target columns: the flags, a known or unambiguous pair, or asked."""
    first = facts.tables["train"] if "train" in facts.tables else facts.tables["all"]
    texts = text_columns(first)
    if source is None and target is None:
        guess = _guess_pair(first, texts)
        if guess:
            source, target = guess
    if source is None or target is None:
        source, target = _ask_or_fail(texts, source, target, ask, first)
    if source == target:
        raise DataError(f"--data: source and target column are both '{source}'")
    _check_column(facts, "source", source)
    _check_column(facts, "target", target)
    facts.source_column, facts.target_column = source, target
    return source, target


def _ask_or_fail(texts, source, target, ask, table) -> tuple[str, str]:
    if len(texts) < 2:
        raise DataError(
            f"--data: fewer than two text columns (columns: {', '.join(map(str, table.columns))}"
            "); the data needs a source text and a summary column"
        )
    if ask is None:
        raise DataError(
            f"--data: cannot tell which columns hold the source text and the summary (text "
            f"columns: {', '.join(texts)}); pass --source-column and --target-column"
        )
    if source is None:
        source = ask("column holding the source text", [c for c in texts if c != target])
    if target is None:
        target = ask("column holding the summary", [c for c in texts if c != source])
    return source, target


# --------------------------------------------------------------------------- lengths and steps
def parse_duration(text: str) -> float:
    """Seconds of '2h', '90m', '45min', '1.5h', '3600s' or '3600'; ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"time budget '{text}': expected a duration such as 2h, 90m or 3600s")
    unit = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
    return float(m.group(1)) * unit[m.group(2) or "s"]


def _p95(values: list[int]) -> int:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * len(values)))] if values else 0


def _round_up(n: float, step: int = 8) -> int:
    return int(math.ceil(n / step) * step)


def token_lengths(model: ModelFacts, facts: DataFacts) -> tuple[int, int, str]:
    """95th-percentile source and target lengths in tokens (words x 1.5 without a tokenizer)."""
    first = facts.tables["train"] if "train" in facts.tables else facts.tables["all"]
    sample = first.head(LENGTH_SAMPLE)
    sources = [str(v) for v in sample[facts.source_column]]
    targets = [str(v) for v in sample[facts.target_column]]
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model.ref)
        prefix = FAMILIES[model.family].source_prefix
        src = [len(ids) for ids in tok([prefix + s for s in sources])["input_ids"]]
        tgt = [len(ids) for ids in tok(targets)["input_ids"]]
        how = "tokens, measured with the model's tokenizer"
    except Exception:  # a hub tokenizer that is not cached: estimate from words
        src = [int(len(s.split()) * 1.5) + 2 for s in sources]
        tgt = [int(len(t.split()) * 1.5) + 2 for t in targets]
        how = "estimated as 1.5 tokens per word (the tokenizer could not be loaded)"
    return _p95(src), _p95(tgt), how


@dataclass(frozen=True)
class Steps:
    steps_per_epoch: int
    teacher: int | None
    stage: int
    finetune: int
    eval_every: dict
    time_s: dict  # part -> max_time_s (empty without a time budget)


def _clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, n))


def size_steps(
    n_train: int,
    family: Family,
    train_teacher: bool,
    n_stages: int,
    n_candidates: int,
    time_budget_s: float | None,
) -> Steps:
    """Step counts from the training rows; with a budget, each training step's ``max_time_s``.

    One epoch per pruning stage and per fine-tune (at least 20 steps, at most 5000), three for
    a trained teacher (50-20000). A time budget keeps a quarter for evaluation, benchmarking and
    start-up and shares the rest among the training steps in proportion to their step counts.
    """
    per_step = family.batch_size * family.grad_accum
    spe = max(1, math.ceil(n_train / per_step))
    teacher = _clamp(3 * spe, 50, 20000) if train_teacher else None
    stage = _clamp(spe, 20, 5000)
    finetune = _clamp(spe, 20, 5000)
    every = {
        k: max(10, v // 4)
        for k, v in (("teacher", teacher or 0), ("stage", stage), ("finetune", finetune))
    }
    time_s: dict = {}
    if time_budget_s:
        total = (teacher or 0) + stage * n_stages + finetune * n_candidates
        unit = 0.75 * time_budget_s / total
        parts = (("teacher", teacher), ("stage", stage), ("finetune", finetune))
        time_s = {k: max(30, int(v * unit)) for k, v in parts if v}
    return Steps(spe, teacher, stage, finetune, every, time_s)


# --------------------------------------------------------------------------- arms
def propose_arms(decoder_layers: int) -> list[dict]:
    """NASH at about a quarter of the decoder layers and one more, SFT at the lower depth, CoFi.

    One stage to sparsity 0.3 per arm: each stage is a candidate with its own fine-tune and
    evaluation, and the demo's tuning found fewer, longer stages better (docs/demo-results.md).
    """
    low = max(1, math.ceil(decoder_layers / 4))
    high = min(decoder_layers - 1, low + 1)
    arms = [{"method": "nash", "decoder_layers": low, "targets": [0.3]}]
    if high > low:
        arms.append({"method": "nash", "decoder_layers": high, "targets": [0.3]})
    if low < decoder_layers:
        arms.append({"method": "sft", "decoder_layers": low})
    arms.append({"method": "cofi", "targets": [0.3]})
    return arms


def serving_variants() -> tuple[list[str], str]:
    import torch

    if torch.cuda.is_available():
        return ["bf16", "fp16"], "CUDA is available here: bf16 and fp16 casts"
    return ["int8"], (
        "no GPU here: int8 dynamic quantisation (add bf16 for its memory: on this project's\n"
        "  # CPUs it saved memory but no time, docs/structure-precision.md)"
    )


# --------------------------------------------------------------------------- the config text
@dataclass
class Plan:
    name: str
    model: ModelFacts
    data: DataFacts
    arms: list[dict]
    steps: Steps
    train_teacher: bool
    max_source_length: int
    max_target_length: int
    length_note: str
    variants: list[str]
    variants_note: str
    time_budget_s: float | None


def _flow(obj) -> str:
    """One-line YAML (flow style) of a small mapping or list; strings JSON-quoted."""
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ", ".join(_flow(v) for v in obj) + "]"
    if isinstance(obj, str):
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", obj) and obj.lower() not in YAML_WORDS
        return obj if plain else json.dumps(obj)
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return repr(obj) if isinstance(obj, float) else str(obj)


def _train(plan: Plan, part: str, steps: int, lr: float) -> dict:
    fam = FAMILIES[plan.model.family]
    out = {"max_steps": steps, "batch_size": fam.batch_size}
    if fam.grad_accum > 1:
        out["grad_accum"] = fam.grad_accum
    out |= {"lr": lr, "warmup_steps": min(500, steps // 10)}
    if part in plan.steps.time_s:
        out["max_time_s"] = plan.steps.time_s[part]
    every = plan.steps.eval_every[part]
    out |= {"eval_every": every, "eval_examples": min(200, max(1, plan.data.rows("validation")))}
    out["checkpoint_every"] = every
    return out


def _data_section(plan: Plan) -> list[str]:
    d, fam = plan.data, FAMILIES[plan.model.family]
    lines = ["data:"]
    if d.kind == "hub":
        lines += ["  kind: hub", f"  name: {json.dumps(d.name)}", f"  splits: {_flow(d.splits)}"]
    else:
        lines += ["  kind: local", f"  files: {_flow(d.files)}"]
    if d.cut:
        lines += [
            "  # one table, cut at random (seeded) into 80% train, 10% validation, 10% test",
            "  split_fractions: {train: 0.8, validation: 0.1, test: 0.1}",
        ]
    lines += [
        f"  source_column: {json.dumps(d.source_column)}",
        f"  target_column: {json.dumps(d.target_column)}",
        f"  source_prefix: {json.dumps(fam.source_prefix)}"
        + ("   # as in the recipe configs/" + fam.recipe),
        f"  # 95th percentiles of the first {LENGTH_SAMPLE} rows ({plan.length_note})",
        f"  max_source_length: {plan.max_source_length}",
        f"  max_target_length: {plan.max_target_length}",
        "  max_samples: {validation: 2000, test: 2000}",
    ]
    return lines


def _teacher_section(plan: Plan) -> list[str]:
    fam = FAMILIES[plan.model.family]
    if not plan.train_teacher:
        return [
            "teacher:",
            "  # your model is the teacher as it is (no training): every candidate is distilled",
            "  # from it and judged against it. Remove `path` to fine-tune the base on this data.",
            f"  path: {json.dumps(plan.model.ref)}",
        ]
    train = _train(plan, "teacher", plan.steps.teacher, fam.teacher_lr)
    return [
        "teacher:",
        f"  # {plan.model.ref} fine-tuned on this data first: 3 epochs of "
        f"{plan.steps.steps_per_epoch} steps",
        f"  train: {_flow(train | {'weight_decay': 0.01})}",
    ]


#: The comment ``nash init`` writes beside each proposed arm, by method.
ARM_COMMENTS = {
    "nash": "NASH: {k} of {depth} decoder layers (uniform), encoder heads and FFN units pruned "
    "to 0.3",
    "sft": "SFT: the same {k} decoder layer(s), no masks: the control",
    "cofi": "CoFi: masks on heads, FFN units, sub-layers and the hidden dimension, target 0.3",
}


def _arm_comment(arm: dict, depth: int) -> str:
    return ARM_COMMENTS[arm["method"]].format(k=arm.get("decoder_layers"), depth=depth)


def _pruning_section(plan: Plan) -> list[str]:
    fam, s = FAMILIES[plan.model.family], plan.steps
    lines = ["pruning:", "  arms:"]
    for arm in plan.arms:
        lines.append(f"    - {_flow(arm)}   # {_arm_comment(arm, plan.model.decoder_layers)}")
    lines += [
        "  stage:",
        f"    # one epoch per stage ({s.steps_per_epoch} steps at batch "
        f"{fam.batch_size * fam.grad_accum}), the target ramping over the first half",
        f"    train: {_flow(_train(plan, 'stage', s.stage, fam.lr))}",
        f"    target_warmup_steps: {max(1, s.stage // 2)}",
        "    distill: {kd_weight: 0.5, temperature: 2.0, layer_weight: 0.001}",
        "",
        "finetune:",
        "  # one epoch per candidate after materialisation, distilled from the teacher",
        f"  train: {_flow(_train(plan, 'finetune', s.finetune, fam.lr))}",
    ]
    return lines


def _eval_bench_section(plan: Plan) -> list[str]:
    fam = FAMILIES[plan.model.family]
    ev = {
        "num_beams": 4,
        "max_new_tokens": plan.max_target_length,
        "no_repeat_ngram_size": 3,
        "batch_size": 16,
    }
    if fam.rouge_tokenizer != "default":
        ev["rouge_tokenizer"] = fam.rouge_tokenizer
    inputs = _clamp(plan.data.rows("test"), 1, 16)
    bench = {
        "batch_sizes": [1, 8],
        "num_inputs": inputs,  # test rows timed, the same for every model
        "warmup": 2,
        "repeats": max(2, inputs),  # rounds: every input once at batch 1
        "fixed_new_tokens": plan.max_target_length,
        "price_per_hour": 0.0,
        "variants": plan.variants,
    }
    return [
        "evaluation:",
        "  # one decoding protocol for the teacher and every candidate, on the same test rows",
        *_keys(ev),
        "",
        "benchmark:",
        "  # serving-precision variants of the teacher and every candidate, each a candidate too:",
        f"  # {plan.variants_note}.",
        "  # price_per_hour: your hardware's price (USD/h) gives cost per 1k requests.",
        *_keys(bench),
    ]


def _keys(section: dict) -> list[str]:
    return [f"  {k}: {_flow(v)}" for k, v in section.items()]


def render(plan: Plan) -> str:
    m, fam = plan.model, FAMILIES[plan.model.family]
    budget = (
        f"time budget {plan.time_budget_s / 3600:.2f} h: each training step stops at its "
        "max_time_s (its schedule may then not finish; lower the steps if a step ends there)"
        if plan.time_budget_s
        else "no time budget: steps from the data only"
    )
    head = [
        f"# Written by `nash init` for {m.ref}: {fam.label} ({m.model_type}), "
        f"{m.encoder_layers} encoder and {m.decoder_layers} decoder layers.",
        f"# Data: {plan.data.rows('train')} training rows; {budget}.",
        "# Check it with `nash validate` and run it with `nash run`; every key is in",
        "# nash_core/config.py, and --set key.path=value overrides any of them.",
        "experiment:",
        f"  name: {json.dumps(plan.name)}",
        "  seed: 42",
        "  device: auto",
        "",
    ]
    tail = [
        "",
        "selection:",
        "  # qualifies: keeps 95% of the teacher's ROUGE-L, and the test set cannot show less;",
        "  # the fastest qualifier at batch 1 wins if it is faster than the teacher",
        "  min_retention: 0.95",
        "  min_retention_low: 0.95",
        "",
        "registry:",
        f"  model_name: {json.dumps('nash-' + plan.name)}",
        "  promotion: auto   # the first sweep's choice becomes @champion; later ones pass a gate",
    ]
    body = (
        _data_section(plan)
        + ["", "model:", f"  base: {json.dumps(m.ref)}", ""]
        + _teacher_section(plan)
        + [""]
        + _pruning_section(plan)
        + [""]
        + _eval_bench_section(plan)
    )
    return "\n".join(head + body + tail) + "\n"


# --------------------------------------------------------------------------- all together
def _name_of(output: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", output.stem.lower()).strip("-")
    return name or "mine"


def make_plan(
    model_ref: str,
    data: Sequence[str],
    output: Path,
    *,
    source_column: str | None = None,
    target_column: str | None = None,
    time_budget_s: float | None = None,
    train_teacher: bool = False,
    ask: Ask | None = None,
) -> Plan:
    """Detect, choose and size everything; raise a NashError before anything is written."""
    model = detect_model(model_ref)
    facts = read_data(data)
    choose_columns(facts, source_column, target_column, ask)
    total = sum(len(t) for t in facts.tables.values())
    if total < MIN_ROWS:
        raise DataError(f"--data: {total} rows; at least {MIN_ROWS} are needed")
    fam = FAMILIES[model.family]
    train_teacher = train_teacher or not model.local  # a hub id is a base model to fine-tune
    arms = propose_arms(model.decoder_layers)
    n_stages = sum(len(a.get("targets", [])) or 1 for a in arms)
    steps = size_steps(facts.rows("train"), fam, train_teacher, n_stages, n_stages, time_budget_s)
    src, tgt, how = token_lengths(model, facts)
    variants, note = serving_variants()
    return Plan(
        _name_of(output),
        model,
        facts,
        arms,
        steps,
        train_teacher,
        _clamp(_round_up(src), 32, fam.max_source_length),
        _clamp(_round_up(tgt * 1.1), 16, 256),
        how,
        variants,
        note,
        time_budget_s,
    )


def write_config(plan: Plan, output: Path, *, force: bool = False) -> Path:
    """Validate the rendered config as ``nash validate`` would, then move it into place."""
    from nash_core.config import check_decoder_layers, load_config

    if output.exists() and not force:
        raise NashError(f"--output: '{output}' exists; pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(render(plan))
        cfg = load_config(tmp)
        check_decoder_layers(cfg, plan.model.decoder_layers)
        os.replace(tmp, output)
    except ConfigError as exc:  # a bug here, not the user's input: say so
        raise NashError(f"nash init wrote a config the schema refuses (a bug): {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return output
