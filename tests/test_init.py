"""`nash init`: real tiny T5 / T5 v1.1 / BART directories (save_pretrained + a tokenizer), real
CSV / JSONL / Parquet files; the written config passes `nash validate`; every bad input exits 2
with one line and writes nothing. (The sweep run from a written config: test_own_model.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from foundation_tiny import corpus_texts, samsum_rows, save_bart, save_t5, write_rows
from tiny_t5 import tiny_t5_config

from nash_cli.main import main
from nash_core.base_model import build_demo_tokenizer
from nash_core.config import load_config
from nash_core.errors import DataError
from nash_core.init_config import (
    choose_columns,
    model_family,
    parse_duration,
    propose_arms,
    read_data,
)
from nash_core.standin import build_standin_model

REPO = Path(__file__).resolve().parents[1]


def save_t5_v11(out: Path, texts: list[str], dec_layers: int = 6) -> Path:
    """A tiny T5 v1.1 / Flan-T5: gated-GELU feed-forward and an untied LM head."""
    tok = build_demo_tokenizer(texts, out)
    config = tiny_t5_config(
        len(tok),
        num_decoder_layers=dec_layers,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )
    build_standin_model(config, untied_head=True).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    texts = corpus_texts(200)
    return {
        "t5": save_t5(root / "t5", texts, dec_layers=4),
        "t5-v1.1": save_t5_v11(root / "t5v11", texts, dec_layers=6),
        "bart": save_bart(root / "bart", texts, dec_layers=3),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    rows = samsum_rows(60)
    return {ext: write_rows(rows, root / f"chats.{ext}") for ext in ("csv", "jsonl", "parquet")}


def init(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main(["init", *map(str, args)])
    except SystemExit as exc:  # argparse: a malformed flag value
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("family", "depth", "arms", "prefix"),
    [
        ("t5", 4, ["nash-k1", "nash-k2", "sft-k1", "cofi"], "summarize: "),
        ("t5-v1.1", 6, ["nash-k2", "nash-k3", "sft-k2", "cofi"], "summarize: "),
        ("bart", 3, ["nash-k1", "nash-k2", "sft-k1", "cofi"], ""),
    ],
)
def test_detects_architecture_depth_and_columns(capsys, tmp_path, models, data, family, depth,
                                                arms, prefix):  # fmt: skip
    out_file = tmp_path / "configs" / "mine.yaml"
    code, out, err = init(capsys, "--model", models[family], "--data", data["csv"],
                          "--output", out_file)  # fmt: skip
    assert code == 0, err
    assert f"{family} with {depth} decoder layers" in out
    assert "'dialogue' -> 'summary', 48 training rows" in out  # 80% of 60
    cfg = load_config(out_file)
    assert [a.label for a in cfg.pruning.arms] == arms
    assert cfg.model.base == str(models[family].resolve()) == cfg.teacher.path
    assert (cfg.data.kind, cfg.data.files) == ("local", {"all": str(data["csv"].resolve())})
    assert (cfg.data.source_column, cfg.data.target_column) == ("dialogue", "summary")
    assert cfg.data.source_prefix == prefix
    assert cfg.benchmark.variants  # the serving variants are proposed
    assert cfg.pruning.stage.train.max_steps >= 20 and cfg.finetune.train.max_steps >= 20
    text = out_file.read_text()
    assert text.count("\n#") + text.count("  #") >= 10  # a commented config
    assert f"{depth} decoder layers" in text.splitlines()[0]
    # the command a user runs next accepts it (with the local model's depth checked too)
    check = subprocess.run(
        [sys.executable, "-m", "nash_cli.main", "validate", str(out_file)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert ": OK" in check.stdout


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_jsonl_and_parquet(capsys, tmp_path, models, data, ext):
    out_file = tmp_path / "mine.yaml"
    code, out, err = init(
        capsys, "--model", models["t5"], "--data", data[ext], "--output", out_file
    )
    assert code == 0, err
    assert load_config(out_file).data.files == {"all": str(data[ext].resolve())}


def test_files_by_split_and_columns_by_flag(capsys, tmp_path, models):
    """Three files named by split; columns that match no known pair, given by flag."""
    files = []
    for split, n in (("train", 40), ("validation", 8), ("test", 8)):
        rows = [
            {"chat": r["dialogue"], "gist": r["summary"], "lang": "en"}
            for r in samsum_rows(n, seed=len(files))
        ]
        files.append(write_rows(rows, tmp_path / f"my_{split}.jsonl"))
    out_file = tmp_path / "mine.yaml"
    code, _, err = init(capsys, "--model", models["bart"], "--data", *files, "--output", out_file)
    assert code == 2 and "pass --source-column and --target-column" in err  # 3 text columns
    assert not out_file.exists()
    code, out, err = init(capsys, "--model", models["bart"], "--data", *files,
                          "--source-column", "chat", "--target-column", "gist",
                          "--output", out_file)  # fmt: skip
    assert code == 0, err
    cfg = load_config(out_file)
    assert cfg.data.files == {s: str(f.resolve()) for s, f in zip(SPLITS, files)}
    assert cfg.data.split_fractions is None and "40 training rows" in out


SPLITS = ("train", "validation", "test")


def test_two_unknown_text_columns_longer_is_the_source(tmp_path):
    rows = [{"n": i, "long": r["dialogue"], "short": r["summary"]} for i, r in
            enumerate(samsum_rows(30))]  # fmt: skip
    facts = read_data([str(write_rows(rows, tmp_path / "d.csv"))])
    assert choose_columns(facts, None, None) == ("long", "short")


def test_asks_when_it_cannot_tell(tmp_path):
    """On a terminal the question is asked (here answered by a function), never otherwise."""
    rows = [{"a": r["dialogue"], "b": r["summary"], "c": r["summary"][::-1]} for r in
            samsum_rows(30)]  # fmt: skip
    facts = read_data([str(write_rows(rows, tmp_path / "d.csv"))])
    asked = []

    def ask(question, choices):
        asked.append((question, list(choices)))
        return "a" if "source" in question else "b"

    assert choose_columns(facts, None, None, ask) == ("a", "b")
    assert asked == [
        ("column holding the source text", ["a", "b", "c"]),
        ("column holding the summary", ["b", "c"]),
    ]
    with pytest.raises(DataError, match="pass --source-column and --target-column"):
        choose_columns(facts, None, None, None)
    assert choose_columns(facts, "c", None, ask) == ("c", "b")  # only the missing one asked


def test_time_budget_caps_each_training_step(capsys, tmp_path, models, data):
    out_file = tmp_path / "mine.yaml"
    code, _, err = init(capsys, "--model", models["t5"], "--data", data["csv"],
                        "--time-budget", "2h", "--train-teacher", "--output", out_file)  # fmt: skip
    assert code == 0, err
    cfg = load_config(out_file)
    assert cfg.teacher.path is None and cfg.teacher.train.max_steps >= 50
    parts = [cfg.teacher.train, cfg.pruning.stage.train, cfg.finetune.train]
    assert all(p.max_time_s for p in parts)
    stages = sum(max(1, len(a.targets)) for a in cfg.pruning.arms)
    total = parts[0].max_time_s + stages * (parts[1].max_time_s + parts[2].max_time_s)
    assert 0.5 * 7200 <= total <= 0.8 * 7200  # three quarters of the budget, rounded
    assert parse_duration("90m") == 5400 and parse_duration("1.5h") == 5400
    code, _, err = init(capsys, "--model", models["t5"], "--data", data["csv"],
                        "--time-budget", "soon", "--output", tmp_path / "x.yaml")  # fmt: skip
    assert code == 2 and "time budget 'soon'" in err


def test_arms_fit_the_depth():
    assert [a.get("decoder_layers") for a in propose_arms(12)] == [3, 4, 3, None]
    assert [a.get("decoder_layers") for a in propose_arms(6)] == [2, 3, 2, None]
    assert [a.get("decoder_layers") for a in propose_arms(2)] == [1, 1, None]  # nash, sft, cofi
    assert [a["method"] for a in propose_arms(1)] == ["nash", "cofi"]


def _not_seq2seq(root: Path) -> Path:
    d = root / "gpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    return d


def _unsupported(root: Path) -> Path:
    d = root / "pegasus"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps({"model_type": "pegasus", "is_encoder_decoder": True, "decoder_layers": 2})
    )
    return d


def _no_config(root: Path) -> Path:
    d = root / "empty"
    d.mkdir()
    (d / "notes.txt").write_text("not a model")
    return d


def _no_weights(root: Path) -> Path:
    d = root / "noweights"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "t5", "num_layers": 2}))
    return d


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_not_seq2seq, "is not a seq2seq model (model_type 'gpt2'"),
        (_unsupported, "is a 'pegasus' encoder-decoder, an architecture nash does not support"),
        (_no_config, "is not a seq2seq model directory: it has no config.json"),
        (_no_weights, "has no safetensors weights"),
        (lambda root: root / "missing", "does not exist"),
        (lambda root: "no-such-org/no-such-model", "is neither a local directory nor a hub model"),
    ],
)
def test_bad_model_exits_2_and_writes_nothing(capsys, tmp_path, data, make, message):
    out_file = tmp_path / "mine.yaml"
    code, out, err = init(capsys, "--model", make(tmp_path), "--data", data["csv"],
                          "--output", out_file)  # fmt: skip
    assert code == 2
    assert err.startswith("nash: error: --model:") and message in err
    assert len(err.strip().splitlines()) == 1 and not out
    assert not out_file.exists() and not list(tmp_path.glob(".mine.yaml*"))


def _rows(tmp: Path, name: str, rows: list[dict]) -> Path:
    return write_rows(rows, tmp / name)


BAD_DATA = {
    "no such column": (
        lambda t: _rows(t, "d.csv", samsum_rows(30)),
        ["--source-column", "text", "--target-column", "summary"],
        "--source-column: '{path}' has no column 'text' (its columns: id, dialogue, summary)",
    ),
    "one text column": (
        lambda t: _rows(
            t, "d.jsonl", [{"n": i, "text": r["dialogue"]} for i, r in enumerate(samsum_rows(30))]
        ),  # fmt: skip
        [],
        "fewer than two text columns (columns: n, text)",
    ),
    "numbers, not text": (
        lambda t: _rows(
            t,
            "d.jsonl",
            [{"source": r["dialogue"], "target": i} for i, r in enumerate(samsum_rows(30))],
        ),  # fmt: skip
        ["--source-column", "source", "--target-column", "target"],
        "--target-column: column 'target' of '{path}' does not hold text",
    ),
    "missing file": (lambda t: t / "nope.csv", [], "file '{path}' does not exist"),
    "unsupported format": (
        lambda t: _rows(t, "d.csv", samsum_rows(30)).rename(t / "d.xlsx"),
        [],
        "'{path}' has an unsupported extension",
    ),
    "unknown hub dataset": (
        lambda t: "no-such-org/no-such-dataset",
        [],
        "'no-such-org/no-such-dataset' is neither a local file nor a hub dataset",
    ),
    "too few rows": (lambda t: _rows(t, "d.csv", samsum_rows(5)), [], "5 rows; at least 20"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_exits_2_and_writes_nothing(capsys, tmp_path, models, case):
    make, flags, message = BAD_DATA[case]
    path = make(tmp_path)
    out_file = tmp_path / "mine.yaml"
    code, out, err = init(capsys, "--model", models["t5"], "--data", path, *flags,
                          "--output", out_file)  # fmt: skip
    assert code == 2, (out, err)
    assert err.startswith("nash: error: --") and len(err.strip().splitlines()) == 1, err
    assert message.format(path=Path(path).resolve() if "column" in message else path) in err
    assert not out_file.exists()


def test_existing_output_is_kept(capsys, tmp_path, models, data):
    out_file = tmp_path / "mine.yaml"
    out_file.write_text("mine: true\n")
    code, _, err = init(
        capsys, "--model", models["t5"], "--data", data["csv"], "--output", out_file
    )
    assert code == 2 and "exists; pass --force" in err
    assert out_file.read_text() == "mine: true\n"
    code, _, err = init(capsys, "--model", models["t5"], "--data", data["csv"],
                        "--output", out_file, "--force")  # fmt: skip
    assert code == 0, err
    assert load_config(out_file).experiment.name == "mine"


def test_written_numbers_come_from_the_data(capsys, tmp_path, models):
    """Longer sources and summaries give longer max lengths; more rows give more steps."""
    short, long = tmp_path / "short.csv", tmp_path / "long.csv"
    base = samsum_rows(800)
    write_rows(base[:40], short)
    write_rows(
        [{**r, "dialogue": r["dialogue"] * 3, "summary": r["summary"] * 2} for r in base], long
    )
    cfgs = {}
    for name, path in (("short", short), ("long", long)):
        code, _, err = init(capsys, "--model", models["t5"], "--data", path,
                            "--output", tmp_path / f"{name}.yaml")  # fmt: skip
        assert code == 0, err
        cfgs[name] = load_config(tmp_path / f"{name}.yaml")
    s, lg = cfgs["short"], cfgs["long"]
    assert lg.data.max_source_length > s.data.max_source_length
    assert lg.data.max_target_length > s.data.max_target_length
    assert lg.evaluation.max_new_tokens == lg.data.max_target_length
    assert s.pruning.stage.train.max_steps == 20  # 32 rows: 2 steps per epoch, at least 20
    assert lg.pruning.stage.train.max_steps == 40  # 640 rows / batch 16: one epoch
    assert pd.read_csv(long).shape[0] == 800


def test_family_from_config_json():
    assert model_family({"model_type": "mt5", "feed_forward_proj": "gated-gelu"}, "m") == "mt5"
    assert model_family({"model_type": "t5", "feed_forward_proj": "gated-gelu"}, "m") == "t5-v1.1"
    assert model_family({"model_type": "t5", "feed_forward_proj": "relu"}, "m") == "t5"
    assert model_family({"model_type": "bart", "is_encoder_decoder": True}, "m") == "bart"
