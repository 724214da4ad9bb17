"""Teacher stage end to end on a tiny demo config: data -> base -> teacher -> quick check."""

import pytest

from nash_core.base_model import prepare_base
from nash_core.config import check_decoder_layers, load_config
from nash_core.data import prepare_splits
from nash_core.loading import load_seq2seq
from nash_core.teacher import quick_check, train_teacher

TINY = [
    "data.demo.num_dialogues=300",
    "data.max_samples.validation=16",
    "data.max_samples.test=12",
    "model.demo.d_model=32",
    "model.demo.d_ff=64",
    "model.demo.d_kv=8",
    "model.demo.encoder_layers=2",
    "model.demo.decoder_layers=3",
    "model.demo.dropout_rate=0.0",
    "teacher.train.max_steps=30",
    "teacher.train.batch_size=16",
    "teacher.train.lr=5e-3",
    "teacher.train.eval_every=10",
    "teacher.train.checkpoint_every=10",
    "teacher.train.log_every=5",
    "experiment.torch_threads=1",
    "evaluation.max_new_tokens=20",
    "evaluation.batch_size=12",
    "pruning.arms=[{method: nash, decoder_layers: 2, targets: [0.3]}]",
]


def test_teacher_end_to_end(tmp_path):
    cfg = load_config("configs/smoke.yaml", TINY)
    splits = prepare_splits(cfg.data, tmp_path / "data")
    base = prepare_base(
        cfg.model, splits, tmp_path / "models", data_cfg=cfg.data, seed=cfg.experiment.seed
    )
    check_decoder_layers(cfg, base.num_decoder_layers)
    logged = []
    best = train_teacher(
        cfg, splits, base, tmp_path / "teacher", callback=lambda step, m: logged.append((step, m))
    )
    assert best == tmp_path / "teacher" / "best"
    evals = [m["eval_val_loss"] for _, m in logged if "eval_val_loss" in m]
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.5
    assert [s for s, m in logged if "train_loss" in m] == [5, 10, 15, 20, 25, 30]

    model, tok = load_seq2seq(best)
    assert model.config.num_decoder_layers == 3 and len(tok) == model.config.vocab_size
    check = quick_check(best, splits, cfg)
    untrained = quick_check(base.path, splits, cfg)
    assert check["examples"] == 12 and check["rougeL"] > untrained["rougeL"] + 0.05
    assert 0.0 <= check["exact_match"] <= 1.0 and check["sample"]["prediction"]

    assert train_teacher(cfg, splits, base, tmp_path / "teacher") == best  # finished: reused
    too_deep = load_config(
        "configs/smoke.yaml",
        TINY[:-1]
        + [
            "pruning.arms=[{method: nash, decoder_layers: 5, targets: [0.3]}]",
            "model.demo.decoder_layers=6",
        ],
    )
    with pytest.raises(ValueError, match="keeps 5 decoder layers but the base model has 3"):
        check_decoder_layers(too_deep, base.num_decoder_layers)


def test_given_teacher_path_is_used_as_is(tmp_path):
    cfg = load_config("configs/smoke.yaml", TINY + [f"teacher.path={tmp_path}"])
    assert train_teacher(cfg, None, None, tmp_path / "unused") == tmp_path
    assert not (tmp_path / "unused").exists()
