"""Data layer: local SAMSum-shaped files -> validated splits -> token ids, and every bad case."""

import json

import pytest
import torch
from foundation_tiny import corpus_texts, samsum_rows, save_bart, save_t5, write_rows
from transformers import AutoTokenizer

from nash_core.config import DataConfig
from nash_core.data import (
    Seq2SeqCollator,
    prepare_splits,
    read_split,
    splits_fingerprint,
    tokenize_split,
)
from nash_core.errors import DataError
from nash_core.loading import load_seq2seq


def local_cfg(files, **kw) -> DataConfig:
    return DataConfig(
        kind="local",
        files={k: str(v) for k, v in files.items()},
        source_column="dialogue",
        target_column="summary",
        **kw,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    texts = corpus_texts(200)
    return {"t5": save_t5(root / "t5", texts), "bart": save_bart(root / "bart", texts)}


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_local_files_to_batches(tmp_path, models, ext, arch):
    files = {
        s: write_rows(samsum_rows(n, seed=i), tmp_path / f"{s}.{ext}")
        for i, (s, n) in enumerate([("train", 12), ("validation", 5), ("test", 4)])
    }
    cfg = local_cfg(
        files,
        max_source_length=24,
        max_target_length=10,
        source_prefix="summarize: ",
        max_samples={"train": 10},
    )
    splits = prepare_splits(cfg, tmp_path / "data")
    meta = json.loads((splits / "meta.json").read_text())
    assert meta["counts"] == {"train": 10, "validation": 5, "test": 4}
    assert meta["columns"] == {"source": "dialogue", "target": "summary"}
    assert splits.name == splits_fingerprint(splits) == meta["fingerprint"]
    assert read_split(splits, "train", limit=2) == [
        {"source": r["dialogue"], "target": r["summary"]} for r in samsum_rows(2, seed=0)
    ]

    model, tok = load_seq2seq(models[arch])
    ds = tokenize_split(splits, "train", tok, cfg)
    assert len(ds) == 10
    assert max(len(x) for x in ds["input_ids"]) == 24  # dialogues are longer: truncated
    assert max(len(x) for x in ds["labels"]) <= 10
    assert all(x[-1] == tok.eos_token_id for x in ds["labels"])  # truncation keeps </s>
    prefix = tok("summarize:", add_special_tokens=False)["input_ids"]
    offset = 1 if arch == "bart" else 0  # BART starts with <s>
    assert ds[0]["input_ids"][offset : offset + len(prefix)] == prefix

    batch = Seq2SeqCollator(tok)([ds[i] for i in range(4)])
    short = min(range(4), key=lambda i: len(ds[i]["labels"]))
    n = len(ds[short]["labels"])
    assert (batch["labels"][short, n:] == -100).all()
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    pad_rows = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad_rows] == tok.pad_token_id).all()
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


def test_same_content_same_directory_and_tokenize_cache(tmp_path, models):
    files = {
        s: write_rows(samsum_rows(6, seed=i), tmp_path / f"{s}.jsonl")
        for i, s in enumerate(["train", "validation", "test"])
    }
    cfg = local_cfg(files)
    first = prepare_splits(cfg, tmp_path / "data")
    assert prepare_splits(cfg, tmp_path / "data") == first
    write_rows(samsum_rows(7, seed=0), files["train"])
    assert prepare_splits(cfg, tmp_path / "data") != first

    tok = AutoTokenizer.from_pretrained(models["t5"])
    a = tokenize_split(first, "test", tok, cfg)
    b = tokenize_split(first, "test", tok, cfg)
    assert a.cache_files == b.cache_files  # reused, not recomputed
    c = tokenize_split(first, "test", tok, cfg.model_copy(update={"max_source_length": 16}))
    assert c.cache_files != a.cache_files


def test_split_fractions_on_one_file_are_seeded(tmp_path):
    path = write_rows(samsum_rows(40), tmp_path / "all.csv")
    cfg = local_cfg({"all": path})
    splits = prepare_splits(cfg, tmp_path / "a")
    counts = json.loads((splits / "meta.json").read_text())["counts"]
    assert counts == {"train": 32, "validation": 4, "test": 4}
    assert prepare_splits(cfg, tmp_path / "b").name == splits.name
    everything = {
        r["source"] for s in ("train", "validation", "test") for r in read_split(splits, s)
    }
    assert len(everything) == 40


def test_demo_kind(tmp_path):
    cfg = DataConfig(kind="demo", demo={"num_dialogues": 100, "seed": 3}, max_samples={"test": 5})
    splits = prepare_splits(cfg, tmp_path)
    assert json.loads((splits / "meta.json").read_text())["counts"] == {
        "train": 80,
        "validation": 10,
        "test": 5,
    }


# --------------------------------------------------------------------------- bad data
def _three(tmp_path, train_rows, ext="jsonl"):
    files = {"train": write_rows(train_rows, tmp_path / f"train.{ext}")}
    for i, s in enumerate(["validation", "test"], start=1):
        files[s] = write_rows(samsum_rows(3, seed=i), tmp_path / f"{s}.{ext}")
    return files


def test_missing_column_lists_available(tmp_path):
    files = _three(tmp_path, samsum_rows(4))
    cfg = DataConfig(
        kind="local",
        files={k: str(v) for k, v in files.items()},
        source_column="dialog",
        target_column="summary",
    )
    with pytest.raises(DataError) as err:
        prepare_splits(cfg, tmp_path / "out")
    msg = str(err.value)
    assert "'dialog'" in msg and "data.source_column" in msg and "split 'train'" in msg
    assert "['id', 'dialogue', 'summary']" in msg
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"dialogue": "   "}, "row 2, column 'dialogue': empty text"),
        ({"summary": None}, "row 2, column 'summary': expected text, got NoneType"),
    ],
)
@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_bad_rows_are_named(tmp_path, bad, expected, ext):
    rows = samsum_rows(5)
    rows[2].update(bad)
    cfg = local_cfg(_three(tmp_path, rows, ext))
    with pytest.raises(DataError) as err:
        prepare_splits(cfg, tmp_path / "out")
    assert expected in str(err.value) and "split 'train'" in str(err.value)


def test_split_too_small_and_empty(tmp_path):
    cfg = local_cfg(_three(tmp_path, samsum_rows(3)))
    with pytest.raises(DataError, match=r"split 'train': 3 row\(s\), but at least 8 are needed"):
        prepare_splits(cfg, tmp_path / "out", min_rows={"train": 8})
    tiny = local_cfg({"all": write_rows(samsum_rows(2), tmp_path / "two.jsonl")})
    with pytest.raises(DataError, match=r"split 'validation': 0 row\(s\)"):
        prepare_splits(tiny, tmp_path / "out")


def test_bad_files(tmp_path):
    files = {s: tmp_path / f"{s}.jsonl" for s in ("train", "validation", "test")}
    with pytest.raises(DataError, match="data.files.train: file .*train.jsonl' does not exist"):
        prepare_splits(local_cfg(files), tmp_path / "out")
    with pytest.raises(DataError, match="unsupported extension"):
        prepare_splits(local_cfg({"all": tmp_path / "data.txt"}), tmp_path / "out")
    with pytest.raises(DataError, match=r"no file for split\(s\) \['test'\]"):
        prepare_splits(
            local_cfg({"train": tmp_path / "a.jsonl", "validation": tmp_path / "b.jsonl"}),
            tmp_path / "out",
        )


def test_hub_offline_is_a_clear_error(tmp_path):
    cfg = DataConfig(
        kind="hub", name="knkarthick/samsum", source_column="dialogue", target_column="summary"
    )
    with pytest.raises(DataError, match="hub dataset 'knkarthick/samsum': could not load it"):
        prepare_splits(cfg, tmp_path)


def test_no_usable_rows_after_tokenisation(tmp_path, models):
    rows = [{"dialogue": "你好 世界", "summary": "再见"} for _ in range(3)]
    files = {s: write_rows(rows, tmp_path / f"{s}.jsonl") for s in ("train", "validation", "test")}
    cfg = local_cfg(files)
    splits = prepare_splits(cfg, tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(models["t5"])  # word-level: all <unk>
    with pytest.raises(DataError, match="split 'train'.*no row has both"):
        tokenize_split(splits, "train", tok, cfg)
