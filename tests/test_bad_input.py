"""Bad input through `nash run`, as a user meets it: exit code 2, a message naming the culprit,
no traceback, and nothing trained or tracked (no MLflow store, no Prefect flow run, no teacher).

The unit tests of each check live with their modules (test_config, test_data, test_base_model,
test_train); these prove the checks run *before* the sweep opens its MLflow runs. Every case
uses a local-files dataset and a local base model built in tmp_path (a tiny T5, 2 decoder
layers), so the only thing wrong is the one thing each case breaks.

Config cases and one case per other kind (data, model, tracking) run the `nash` console script
in a subprocess; the other data/model cases call the same entry point in this process
(``nash_cli.main.main(["run", ...])``): identical code path, without paying ~10 s of imports each.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from foundation_tiny import corpus_texts, samsum_rows, save_t5, write_rows
from sweep_tiny import REPO, clean_env, nash, with_overrides

ARMS = "pruning.arms=[{method: sft, decoder_layers: 1}]"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    """A valid local setup: data files, base model dir, the config that ties them together."""
    root = tmp_path_factory.mktemp("good")
    files = {
        s: str(write_rows(samsum_rows(n, seed=i), root / f"{s}.jsonl"))
        for i, (s, n) in enumerate((("train", 24), ("validation", 4), ("test", 4)))
    }
    base = save_t5(root / "base", corpus_texts(), dec_layers=2)
    raw = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    raw["data"] = {
        "kind": "local",
        "files": files,
        "source_column": "dialogue",
        "target_column": "summary",
        "max_source_length": 64,
        "max_target_length": 32,
    }
    raw["model"] = {"base": str(base)}
    return {"raw": raw, "files": files, "base": base}


def write_config(tmp_path: Path, raw: dict, **data) -> Path:
    raw = json.loads(json.dumps(raw))
    raw["data"].update(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(tmp_path: Path, config: Path, *overrides: str, **env) -> tuple:
    work = tmp_path / "work"
    proc = nash(
        ["run", config, "--workdir", work, *with_overrides([ARMS, *overrides])],
        clean_env(tmp_path, **env),
        timeout=300,
    )
    return proc, work


@pytest.fixture
def run_here(monkeypatch, capsys):
    """``nash run`` in this process; returns what :func:`run` returns."""
    from nash_cli.main import main

    def call(tmp_path: Path, config: Path, *overrides: str) -> tuple:
        monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # run_sweep would set it
        work = tmp_path / "work"
        capsys.readouterr()
        code = main(
            ["run", str(config), "--workdir", str(work), *with_overrides([ARMS, *overrides])]
        )
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err), work

    return call


def assert_rejected(proc, work: Path, *culprits: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    for culprit in culprits:
        assert culprit in proc.stderr, (culprit, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert not (work / "mlflow.db").exists(), "nothing may be tracked"
    assert "Beginning flow run" not in proc.stdout + proc.stderr, "no Prefect flow may start"
    trained = [
        p.name
        for p in (work / "runs").glob("*")
        if p.name.split("-")[0] in ("teacher", "stage", "finetune")
    ]
    assert not trained, f"nothing may be trained: {trained}"


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "override, culprits",
    [
        ("experiment.seeed=1", ["experiment.seeed: unknown key"]),
        ("teacher.train.batch_size=big", ["teacher.train.batch_size", "integer"]),
        (
            "pruning.arms=[{method: nash, decoder_layers: 1, targets: [1.0]}]",
            ["pruning.arms.0.targets", "outside [0, 1)"],
        ),
        (
            "pruning.arms=[{method: nash, decoder_layers: 1, targets: [0.3, 0.2]}]",
            ["pruning.arms.0.targets", "strictly increasing"],
        ),
        ("pruning.arms=[{method: sft, decoder_layers: 0}]", ["pruning.arms.0.decoder_layers"]),
        (
            "pruning.arms=[{method: sft, decoder_layers: 3}]",
            ["pruning.arms.0.decoder_layers: keeps 3 decoder layers but the base model has 2"],
        ),
        ("pruning.arms=[]", ["pruning", "arms is empty"]),
        ("data.target_column=null", ["missing dataset column mapping: set data.target_column"]),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "target-outside",
        "targets-not-increasing",
        "k-below-1",
        "k-above-depth",
        "no-arms",
        "no-column-mapping",
    ],
)
def test_bad_config(tmp_path, good, override, culprits):
    proc, work = run(tmp_path, write_config(tmp_path, good["raw"]), override)
    assert_rejected(proc, work, *culprits)


def test_unreadable_config_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_bytes(b"experiment:\n  name: \xff\xfe\n")
    proc, work = run(tmp_path, config)
    assert_rejected(proc, work, f"cannot read {config}")


# --------------------------------------------------------------------------- data
def _with_train(tmp_path: Path, good: dict, rows: list[dict], ext: str = "jsonl") -> Path:
    train = write_rows(rows, tmp_path / f"train.{ext}")
    return write_config(tmp_path, good["raw"], files={**good["files"], "train": str(train)})


def test_missing_column(tmp_path, good):
    rows = [
        {"id": r["id"], "dialogue": r["dialogue"], "abstract": r["summary"]}
        for r in samsum_rows(24)
    ]
    proc, work = run(tmp_path, _with_train(tmp_path, good, rows))
    assert_rejected(
        proc,
        work,
        "split 'train': column 'summary' (data.target_column) not found",
        "available columns: ['id', 'dialogue', 'abstract']",
    )


def test_empty_text(tmp_path, good, run_here):
    rows = samsum_rows(24)
    rows[5]["summary"] = "   "
    proc, work = run_here(tmp_path, _with_train(tmp_path, good, rows))
    assert_rejected(proc, work, "split 'train'", "row 5, column 'summary': empty text")


def test_non_string_text(tmp_path, good, run_here):
    rows = samsum_rows(24)
    rows[7]["dialogue"] = None
    proc, work = run_here(tmp_path, _with_train(tmp_path, good, rows))
    assert_rejected(proc, work, "row 7, column 'dialogue': expected text, got NoneType")


def test_empty_split(tmp_path, good, run_here):
    empty = tmp_path / "validation.jsonl"
    empty.touch()
    config = write_config(tmp_path, good["raw"], files={**good["files"], "validation": str(empty)})
    proc, work = run_here(tmp_path, config)
    assert_rejected(proc, work, f"data.files.validation: file '{empty}' is empty (0 rows)")


def test_no_usable_rows_after_tokenisation(tmp_path, good, run_here):
    rows = [
        {"id": str(i), "dialogue": "你好 世界 " * (i + 1), "summary": "再见"} for i in range(24)
    ]
    proc, work = run_here(tmp_path, _with_train(tmp_path, good, rows))  # all <unk>: none left
    assert_rejected(proc, work, "split 'train'", "no row has both a non-empty source and target")


def test_long_sources_are_truncated_not_rejected(tmp_path, good):
    """Every source longer than max_source_length is fine: truncated, every row kept."""
    from nash_core.config import validate_config
    from nash_core.data import read_split, tokenize_split
    from tasks.preflight import preflight

    raw = json.loads(json.dumps(good["raw"]))
    raw["data"]["max_source_length"] = 8
    raw["pruning"]["arms"] = [{"method": "sft", "decoder_layers": 1}]
    cfg = validate_config(raw)
    result = preflight(cfg, tmp_path / "work")
    splits = result.data.meta["splits"]
    assert all(len(r["source"].split()) > 8 for r in read_split(splits, "train"))
    from transformers import AutoTokenizer

    ds = tokenize_split(splits, "train", AutoTokenizer.from_pretrained(good["base"]), cfg.data)
    assert len(ds) == 24 and max(len(x) for x in ds["input_ids"]) == 8
    assert not (tmp_path / "work" / "mlflow.db").exists()


# --------------------------------------------------------------------------- models
def _broken_base(tmp_path: Path, good: dict, how) -> Path:
    base = Path(shutil.copytree(good["base"], tmp_path / "base"))
    how(base)
    raw = json.loads(json.dumps(good["raw"]))
    raw["model"]["base"] = str(base)
    return write_config(tmp_path, raw)


def test_unsupported_architecture(tmp_path, good, run_here):
    from transformers import GPT2Config, GPT2LMHeadModel

    def gpt2(base: Path):
        GPT2LMHeadModel(
            GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=1000, n_positions=64)
        ).save_pretrained(base)

    proc, work = run_here(tmp_path, _broken_base(tmp_path, good, gpt2))
    assert_rejected(proc, work, "is a 'gpt2' model", "supports ['t5', 'mt5', 'bart']")


def test_directory_without_weights(tmp_path, good, run_here):
    proc, work = run_here(
        tmp_path, _broken_base(tmp_path, good, lambda base: (base / "model.safetensors").unlink())
    )
    assert_rejected(proc, work, "has no safetensors weights")


def test_corrupted_weights(tmp_path, good):
    def corrupt(base: Path):
        blob = (base / "model.safetensors").read_bytes()
        (base / "model.safetensors").write_bytes(blob[: len(blob) // 2])  # a cut-off download

    proc, work = run(tmp_path, _broken_base(tmp_path, good, corrupt))
    assert_rejected(proc, work, "model.safetensors is corrupted or truncated")


def test_tokenizer_does_not_match_the_model(tmp_path, good, run_here):
    from nash_core.base_model import build_demo_tokenizer

    def other_tokenizer(base: Path):
        build_demo_tokenizer(corpus_texts() + ["zebra quokka axolotl " * 40], base, vocab_size=5000)

    proc, work = run_here(tmp_path, _broken_base(tmp_path, good, other_tokenizer))
    assert_rejected(proc, work, "the tokenizer has", "but the t5 model embeds only")


# --------------------------------------------------------------------------- tracking, disk
def test_unreachable_tracking_server(tmp_path, good):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, work = run(
        tmp_path,
        write_config(tmp_path, good["raw"]),
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
    )
    assert_rejected(proc, work, f"MLflow tracking server http://127.0.0.1:{port} is unreachable")


def test_too_little_disk_space(tmp_path, good, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM

    from nash_core.config import validate_config
    from nash_core.errors import NashError
    from tasks import preflight as pf

    cfg = validate_config(good["raw"])  # smoke's 4 arms: 5 candidates
    work = tmp_path / "work"
    ok = pf.preflight(cfg, work)
    params = sum(
        p.numel() for p in AutoModelForSeq2SeqLM.from_pretrained(good["base"]).parameters()
    )
    assert ok.needed_bytes == 4 * params * (pf.FIXED_COPIES + pf.COPIES_PER_CANDIDATE * 5)

    real = shutil.disk_usage(work)
    monkeypatch.setattr(pf.shutil, "disk_usage", lambda p: real._replace(free=ok.needed_bytes - 1))
    with pytest.raises(NashError) as err:
        pf.preflight(cfg, work)
    msg = str(err.value)
    gib = 1024**3
    assert f"workdir {work}: {(ok.needed_bytes - 1) / gib:.2f} GiB free" in msg
    assert f"needs about {ok.needed_bytes / gib:.2f} GiB" in msg and "x 5 candidates" in msg
    monkeypatch.setenv(pf.SKIP_DISK_CHECK, "1")  # the documented way past it
    assert pf.preflight(cfg, work).needed_bytes == ok.needed_bytes
    assert not (work / "mlflow.db").exists()
