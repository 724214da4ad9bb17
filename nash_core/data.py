"""The data layer: any dataset -> validated ``{train,validation,test}.jsonl`` -> token ids.

Three sources (``data.kind``) end in the same place:

- ``demo``: the generated corpus of :mod:`nash_core.demo_corpus`, split by ``split_fractions``;
- ``hub``: ``datasets.load_dataset(name, config_name, revision=...)``, one split per entry of
  ``data.splits`` (or the train split cut by ``split_fractions``);
- ``local``: jsonl/json/csv/parquet files through the same ``load_dataset`` builders.

Everything is validated *before* any training starts, because a bad row found after an hour of
training costs an hour: missing columns (the message lists the available ones), empty or
non-string texts (dataset, split, column and row index), empty or too-small splits. The result is
written atomically into a directory named by a fingerprint of its content, so identical data is
prepared once and every later stage can key its cache on ``splits_fingerprint``.

Tokenisation (:func:`tokenize_split`) is cached next to the splits by (data fingerprint,
tokenizer fingerprint, source prefix, max lengths); :class:`Seq2SeqCollator` pads batches, with
-100 in the labels so that padding is never a target.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nash_core.config import DataConfig, SplitFractions
from nash_core.errors import DataError
from nash_core.io import atomic_dir, atomic_write_json, read_json

SPLITS = ("train", "validation", "test")
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


# --------------------------------------------------------------------------- loading
@dataclass
class _RawSplit:
    """Texts of one split before validation, with the row numbers of the original dataset."""

    sources: list[Any]
    targets: list[Any]
    rows: list[int]


def _describe(cfg: DataConfig) -> str:
    if cfg.kind == "demo":
        return f"demo corpus (num_dialogues={cfg.demo.num_dialogues}, seed={cfg.demo.seed})"
    if cfg.kind == "hub":
        extra = f", config '{cfg.config_name}'" if cfg.config_name else ""
        rev = f", revision '{cfg.revision}'" if cfg.revision else ""
        return f"hub dataset '{cfg.name}'{extra}{rev}"
    return "local files " + ", ".join(f"{k}={v}" for k, v in (cfg.files or {}).items())


def _load_demo(cfg: DataConfig) -> dict[str, Any]:
    import datasets

    from nash_core.demo_corpus import generate_corpus

    return {
        "all": datasets.Dataset.from_list(generate_corpus(cfg.demo.num_dialogues, cfg.demo.seed))
    }


def _load_hub(cfg: DataConfig, what: str) -> dict[str, Any]:
    import datasets

    wanted = {"train": cfg.splits["train"]} if cfg.split_fractions else dict(cfg.splits)
    try:
        ds = datasets.load_dataset(cfg.name, cfg.config_name, revision=cfg.revision)
    except Exception as exc:  # datasets raises many types (offline, 404, bad config name)
        raise DataError(
            f"{what}: could not load it ({type(exc).__name__}: {exc}). Check "
            "data.name, data.config_name and data.revision, and that you are online "
            "or the dataset is in the local Hugging Face cache."
        ) from exc
    missing = {ours: theirs for ours, theirs in wanted.items() if theirs not in ds}
    if missing:
        raise DataError(
            f"{what}: split(s) {sorted(missing.values())} not found (asked for by "
            f"data.splits); the dataset has {sorted(ds)}. Fix data.splits, or set "
            "data.split_fractions to cut the train split."
        )
    return {"all" if cfg.split_fractions else ours: ds[theirs] for ours, theirs in wanted.items()}


def _load_local(cfg: DataConfig, what: str) -> dict[str, Any]:
    import datasets

    files = dict(cfg.files or {})
    if cfg.split_fractions and "all" not in files:
        if "train" not in files:
            raise DataError(
                f"{what}: data.split_fractions needs data.files.all or data.files.train"
            )
        files = {"all": files["train"]}
    elif not cfg.split_fractions:
        absent = [s for s in SPLITS if s not in files]
        if absent:
            raise DataError(
                f"{what}: no file for split(s) {absent}. Add data.files.<split> for "
                "each, or give one data.files.all plus data.split_fractions."
            )
    out = {}
    for split, name in files.items():
        path = Path(name).expanduser()
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"data.files.{split}: '{name}' has an unsupported extension; use one "
                f"of {sorted(FORMATS)}"
            )
        if not path.is_file():
            raise DataError(f"data.files.{split}: file '{name}' does not exist")
        if path.stat().st_size == 0:  # datasets' own error for this is a bare StopIteration
            raise DataError(
                f"data.files.{split}: file '{name}' is empty (0 rows); the split "
                "needs at least one row"
            )
        try:
            out[split] = datasets.load_dataset(fmt, data_files=str(path), split="train")
        except Exception as exc:
            raise DataError(
                f"data.files.{split}: could not read '{name}' as {fmt} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    return out


def _texts(table: Any, src: str, tgt: str, where: str) -> _RawSplit:
    available = list(table.column_names)
    for role, col in (("source_column", src), ("target_column", tgt)):
        if col not in available:
            raise DataError(
                f"{where}: column '{col}' (data.{role}) not found; available columns: {available}"
            )
    sources, targets = list(table[src]), list(table[tgt])
    return _RawSplit(sources, targets, list(range(len(sources))))


def _take(raw: _RawSplit, idx: Iterable[int]) -> _RawSplit:
    idx = list(idx)
    return _RawSplit(
        [raw.sources[i] for i in idx], [raw.targets[i] for i in idx], [raw.rows[i] for i in idx]
    )


def _cut(raw: _RawSplit, fractions: SplitFractions, seed: int) -> dict[str, _RawSplit]:
    """Seeded shuffle, then train/validation/test by fraction (each gets at least one row)."""
    order = list(range(len(raw.rows)))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val = max(1, round(n * fractions.validation)) if n >= 3 else 0
    n_test = max(1, round(n * fractions.test)) if n >= 3 else 0
    n_train = n - n_val - n_test
    return {
        "train": _take(raw, order[:n_train]),
        "validation": _take(raw, order[n_train : n_train + n_val]),
        "test": _take(raw, order[n_train + n_val :]),
    }


def _check_rows(raw: _RawSplit, where: str, src: str, tgt: str) -> list[dict]:
    """Return the rows as ``{source, target}``; raise naming the first bad rows."""
    bad = []
    for src_text, tgt_text, row in zip(raw.sources, raw.targets, raw.rows):
        for col, text in ((src, src_text), (tgt, tgt_text)):
            if not isinstance(text, str):
                bad.append(
                    f"row {row}, column '{col}': expected text, got "
                    f"{type(text).__name__} {text!r:.40}"
                )
            elif not text.strip():
                bad.append(f"row {row}, column '{col}': empty text")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(
            f"{where}: {len(bad)} unusable value(s): "
            + "; ".join(bad[:5])
            + more
            + ". Fix or drop these rows (row numbers count from 0 in the original "
            "split)."
        )
    return [{"source": s, "target": t} for s, t in zip(raw.sources, raw.targets)]


# --------------------------------------------------------------------------- public API
def load_rows(
    data_cfg: DataConfig, min_rows: Mapping[str, int] | None = None
) -> dict[str, list[dict]]:
    """Load, map columns, split, cap and validate; ``{split: [{source, target}, ...]}``.

    ``min_rows`` (default 1 per split) lets the caller demand more, e.g. a train split at least
    one batch long.
    """
    what = _describe(data_cfg)
    if data_cfg.kind == "demo":
        loaded, src, tgt = _load_demo(data_cfg), "source", "target"
        fractions = data_cfg.split_fractions or SplitFractions()
    else:
        loader = _load_hub if data_cfg.kind == "hub" else _load_local
        loaded, src, tgt = loader(data_cfg, what), data_cfg.source_column, data_cfg.target_column
        fractions = data_cfg.split_fractions

    raw = {}
    for part, table in loaded.items():
        label = part if part != "all" else "all (before split_fractions)"
        raw[part] = _texts(table, src, tgt, f"{what}, split '{label}'")
    if "all" in raw:
        raw = _cut(raw["all"], fractions, data_cfg.demo.seed if data_cfg.kind == "demo" else 0)

    need = {s: 1 for s in SPLITS} | dict(min_rows or {})
    out = {}
    for split in SPLITS:
        part = raw[split]
        cap = data_cfg.max_samples.get(split)
        if cap is not None:
            part = _take(part, range(min(cap, len(part.rows))))
        where = f"{what}, split '{split}'"
        if len(part.rows) < need[split]:
            raise DataError(
                f"{where}: {len(part.rows)} row(s), but at least {need[split]} are "
                "needed. Use a bigger dataset, change data.split_fractions or raise "
                f"data.max_samples.{split}."
            )
        out[split] = _check_rows(part, where, src, tgt)
    return out


def _fingerprint_rows(rows: Mapping[str, list[dict]]) -> str:
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(split.encode())
        for r in rows[split]:
            h.update(json.dumps([r["source"], r["target"]], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def prepare_splits(
    data_cfg: DataConfig, out_dir: str | Path, min_rows: Mapping[str, int] | None = None
) -> Path:
    """Validate the dataset and write it under ``out_dir/<content fingerprint>/``.

    Returns the splits directory: ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (fields
    ``source`` and ``target``) and ``meta.json`` (fingerprint, counts, columns, dataset).
    Identical content maps to the same directory, which is then reused as it is.
    """
    rows = load_rows(data_cfg, min_rows)
    fp = _fingerprint_rows(rows)
    final = Path(out_dir) / fp
    if (final / "meta.json").is_file():
        return final
    with atomic_dir(final) as tmp:
        for split in SPLITS:
            lines = (json.dumps(r, ensure_ascii=False) for r in rows[split])
            (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        atomic_write_json(
            tmp / "meta.json",
            {
                "fingerprint": fp,
                "counts": {s: len(rows[s]) for s in SPLITS},
                "columns": {
                    "source": data_cfg.source_column or "source",
                    "target": data_cfg.target_column or "target",
                },
                "dataset": _describe(data_cfg),
            },
        )
    return final


def splits_fingerprint(splits_dir: str | Path) -> str:
    meta = Path(splits_dir) / "meta.json"
    if not meta.is_file():
        raise DataError(
            f"{splits_dir} is not a prepared splits directory (no meta.json); "
            "run data preparation first"
        )
    return read_json(meta)["fingerprint"]


def read_split(splits_dir: str | Path, split: str, limit: int | None = None) -> list[dict]:
    """The first ``limit`` (default all) ``{source, target}`` rows of a prepared split."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; expected one of {SPLITS}")
    path = Path(splits_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path} is missing; prepare the splits again")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


# --------------------------------------------------------------------------- tokenisation
def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of everything that decides token ids: vocabulary, pipeline and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # call-time settings the tokenizer remembers
        state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256((type(tokenizer).__name__ + body + special).encode()).hexdigest()[:16]


def tokenize_split(
    splits_dir: str | Path,
    split: str,
    tokenizer,
    data_cfg: DataConfig,
    cache_dir: str | Path | None = None,
):
    """Token ids of a split as a ``datasets.Dataset`` (input_ids, attention_mask, labels).

    Sources get ``data.source_prefix`` and are truncated to ``max_source_length``, targets to
    ``max_target_length``. Cached under ``cache_dir`` (default ``<splits_dir>/tokenized``).
    """
    import datasets

    key_parts = [
        splits_fingerprint(splits_dir),
        tokenizer_fingerprint(tokenizer),
        split,
        data_cfg.source_prefix,
        str(data_cfg.max_source_length),
        str(data_cfg.max_target_length),
    ]
    key = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir else Path(splits_dir) / "tokenized"
    final = cache / f"{split}-{key}"
    if (final / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(final))

    rows = read_split(splits_dir, split)
    enc = tokenizer(
        [data_cfg.source_prefix + r["source"] for r in rows],
        max_length=data_cfg.max_source_length,
        truncation=True,
    )
    labels = tokenizer(
        text_target=[r["target"] for r in rows],
        max_length=data_cfg.max_target_length,
        truncation=True,
    )["input_ids"]
    special = set(tokenizer.all_special_ids)
    keep = [
        i
        for i, (src, tgt) in enumerate(zip(enc["input_ids"], labels))
        if any(t not in special for t in src) and any(t not in special for t in tgt)
    ]
    if not keep:
        raise DataError(
            f"split '{split}' of {splits_dir}: no row has both a non-empty source "
            f"and target after tokenisation with {type(tokenizer).__name__}; check "
            "the tokenizer matches the data language and the max lengths"
        )
    ds = datasets.Dataset.from_dict(
        {
            "input_ids": [enc["input_ids"][i] for i in keep],
            "attention_mask": [enc["attention_mask"][i] for i in keep],
            "labels": [labels[i] for i in keep],
        }
    )
    with atomic_dir(final) as tmp:
        ds.save_to_disk(str(tmp))
    return datasets.load_from_disk(str(final))


class Seq2SeqCollator:
    """Pad a list of tokenised examples to the longest one; labels are padded with -100."""

    def __init__(self, tokenizer):
        if tokenizer.pad_token_id is None:
            raise DataError(
                f"tokenizer {type(tokenizer).__name__} has no pad token; set one "
                "(e.g. tokenizer.pad_token = tokenizer.eos_token) before training"
            )
        self.pad_id = tokenizer.pad_token_id

    def __call__(self, features: list[Mapping[str, list[int]]]) -> dict[str, torch.Tensor]:
        def pad(key: str, value: int) -> torch.Tensor:
            width = max(len(f[key]) for f in features)
            return torch.tensor([list(f[key]) + [value] * (width - len(f[key])) for f in features])

        return {
            "input_ids": pad("input_ids", self.pad_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", -100),
        }
