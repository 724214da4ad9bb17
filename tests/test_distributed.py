"""Data-parallel training steps: the real torchrun entry (gloo on CPU) against the in-process run.

World size 1 under torchrun must give exactly the in-process result (same weights, masks,
multipliers, metrics and curve): the process group, the gradient all-reduce, rank 0's
evaluation broadcast and the curve forwarding are all on the path, and none may change a
number. Two ranks split every batch and must still train one model, written once, to nearly
the same numbers (each rank averages over its own half-batch, so not bit for bit).
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_t5 import tiny_t5_config
from transformers import T5ForConditionalGeneration

from nash_core.base_model import build_demo_tokenizer
from nash_core.config import load_config
from nash_core.data import prepare_splits, read_split
from nash_core.launch import run_step, run_torchrun
from nash_core.loading import load_seq2seq

OVERRIDES = [
    "data.demo.num_dialogues=100",
    "data.max_source_length=32",
    "data.max_target_length=12",
    "data.max_samples={train: 48, validation: 8, test: 8}",
    "pruning.arms=[{method: nash, decoder_layers: 2, targets: [0.3]}]",
    "pruning.stage.train={max_steps: 6, batch_size: 8, lr: 1.0e-3, eval_every: 3, "
    "eval_examples: 8, checkpoint_every: 3, log_every: 2}",
    "pruning.stage.target_warmup_steps=3",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    cfg = load_config("configs/smoke.yaml", OVERRIDES)
    splits = prepare_splits(cfg.data, root / "data")
    rows = read_split(splits, "train")
    tok = build_demo_tokenizer(
        [r["source"] + " " + r["target"] for r in rows], root / "tok", vocab_size=300
    )
    torch.manual_seed(0)
    model_cfg = tiny_t5_config(
        len(tok),
        num_decoder_layers=3,
        dropout_rate=0.1,
        relative_attention_num_buckets=8,
    )
    T5ForConditionalGeneration(model_cfg).save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root, cfg, splits


@pytest.fixture(autouse=True)
def one_thread_per_rank(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _args(setup, name: str) -> dict:
    root, _, splits = setup
    return {
        "teacher_dir": str(root / "teacher"),
        "init_dir": None,
        "arm_index": 0,
        "prev_target": 0.0,
        "target": 0.3,
        "out_dir": str(root / name / "stage"),
        "splits_dir": str(splits),
    }


def _recorder(records: list):
    return lambda step, metrics: records.append({"step": step, **metrics})


def _untimed(curve: list) -> list:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in curve]


@pytest.fixture(scope="module")
def in_process(setup):
    """The stage trained in this process: (result dir, curve)."""
    curve: list = []
    out = run_step("stage", setup[1], _args(setup, "inproc"), callback=_recorder(curve))
    return out, curve


def test_torchrun_world_of_one_equals_the_in_process_run(setup, in_process):
    root, cfg, _ = setup
    here, here_curve = in_process
    curve: list = []
    there = run_torchrun(
        "stage", cfg, _args(setup, "world1"), 1, callback=_recorder(curve), work_dir=root / "world1"
    )
    assert there == root / "world1" / "stage"

    a, b = load_file(here / "model.safetensors"), load_file(there / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (torch.load(d / "nash_masks.pt", weights_only=True) for d in (here, there))
    assert all(torch.equal(ma["masks"][k], mb["masks"][k]) for k in ma["masks"])
    assert all(torch.equal(ma["lagrangian"][k], mb["lagrangian"][k]) for k in ma["lagrangian"])
    meta_a, meta_b = (json.loads((d / "stage_meta.json").read_text()) for d in (here, there))
    assert meta_a["best_metrics"] == meta_b["best_metrics"]
    assert [r["step"] for r in curve] == [2, 3, 4, 6, 6]  # logs every 2, evals at 3 and 6
    assert _untimed(curve) == _untimed(here_curve)


def test_two_ranks_train_one_model(setup, in_process):
    root, cfg, _ = setup
    here, here_curve = in_process
    two = cfg.model_copy(
        update={"experiment": cfg.experiment.model_copy(update={"train_processes": 2})}
    )
    curve: list = []
    there = run_step("stage", two, _args(setup, "world2"), callback=_recorder(curve))

    log = (root / "world2" / "stage.torchrun.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log
    model, _ = load_seq2seq(there)
    assert len(model.decoder.block) == 2
    assert not (root / "world2" / ".stage.work").exists(), "rank 0 cleaned up its checkpoints"
    # Same steps, evaluations and multipliers; the numbers differ a little because each rank
    # averages the loss over its own half-batch (measured: train loss within 2 %).
    assert [r["step"] for r in curve] == [r["step"] for r in here_curve] == [2, 3, 4, 6, 6]
    for mine, ref in zip(curve, here_curve):
        for key in ("train_loss", "eval_val_loss", "lambda2_encoder"):
            if key in ref:
                assert mine[key] == pytest.approx(ref[key], rel=0.05), (mine["step"], key)
    meta_a, meta_b = (json.loads((d / "stage_meta.json").read_text()) for d in (here, there))
    assert meta_b["best_metrics"]["val_loss"] == pytest.approx(
        meta_a["best_metrics"]["val_loss"], rel=0.01
    )
    assert meta_b["best_metrics"] != meta_a["best_metrics"], "two half-batches: not bit-equal"
