"""Stage runners end to end on a tiny T5: staged NASH, CoFi, SFT, materialise, fine-tune, resume."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_t5 import tiny_t5_config
from transformers import T5ForConditionalGeneration

from nash_core import prune
from nash_core.base_model import build_demo_tokenizer
from nash_core.config import (
    DataConfig,
    DistillConfig,
    FinetuneConfig,
    PruneStageConfig,
    TrainConfig,
    arm_config,
)
from nash_core.data import prepare_splits, read_split
from nash_core.loading import load_seq2seq
from nash_core.steps import FinetuneJob, StageJob

DATA = DataConfig(
    kind="demo",
    demo={"num_dialogues": 100},
    max_source_length=32,
    max_target_length=12,
    max_samples={"train": 48, "validation": 8, "test": 8},
)


def _stage_cfg(steps=8, **kw):
    train = TrainConfig(
        max_steps=steps,
        batch_size=8,
        lr=1e-3,
        eval_every=4,
        eval_examples=8,
        checkpoint_every=4,
        log_every=2,
    )
    return PruneStageConfig(
        train=train,
        mask_lr=0.3,
        lagrangian_lr=0.3,
        target_warmup_steps=4,
        sparsity_epsilon=0.5,
        **kw,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    splits = prepare_splits(DATA, root / "splits")
    rows = read_split(splits, "train")
    tok = build_demo_tokenizer(
        [r["source"] + " " + r["target"] for r in rows], root / "tok", vocab_size=300
    )
    torch.manual_seed(0)
    cfg = tiny_t5_config(
        len(tok),
        num_layers=3,
        num_decoder_layers=3,
        dropout_rate=0.0,
        relative_attention_num_buckets=8,
    )
    T5ForConditionalGeneration(cfg).save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root, splits


def _run(setup, arm, init, prev, target, name, cfg=None, **kw):
    root, splits = setup
    job = StageJob(
        teacher_dir=root / "teacher",
        init_dir=init,
        arm=arm,
        stage=cfg or _stage_cfg(),
        prev_target=prev,
        target=target,
        out_dir=root / name,
        splits_dir=splits,
        data=DATA,
    )
    return prune.run_stage(job, **kw)


def _finetune(setup, export, ft_cfg, name):
    root, splits = setup
    job = FinetuneJob(
        export_dir=export,
        teacher_dir=root / "teacher",
        finetune=ft_cfg,
        out_dir=root / name,
        splits_dir=splits,
        data=DATA,
    )
    return prune.finetune_export(job)


def test_staged_nash_materialise_finetune(setup):
    root, splits = setup
    arm = arm_config(dict(method="nash", decoder_layers=2, targets=[0.2, 0.4]))
    s1 = _run(setup, arm, None, 0.0, 0.2, "nash-s1")
    meta1 = json.loads((s1 / "stage_meta.json").read_text())
    assert meta1["decoder_layers_kept"] == [0, 2] and meta1["target"] == 0.2 and meta1["on_target"]
    assert not (root / ".nash-s1.work").exists()
    s1_masks = torch.load(s1 / "nash_masks.pt", weights_only=True)
    assert sorted(s["stack"] for s in s1_masks["specs"]) == ["encoder", "encoder"]

    s2 = _run(setup, arm, s1, 0.2, 0.4, "nash-s2")
    meta2 = json.loads((s2 / "stage_meta.json").read_text())
    assert meta2["init_dir"] == str(s1) and meta2["prev_target"] == 0.2
    student, _ = load_seq2seq(s2)
    assert len(student.decoder.block) == 2

    export = prune.materialize_stage(s2, root / "nash-e2")
    nash = json.loads((export / "config.json").read_text())["nash"]
    assert (
        nash["decoder_layers_kept"] == [0, 2] and nash["method"] == "nash" and nash["target"] == 0.4
    )
    assert nash["prunable_params_after"]["encoder"] <= nash["prunable_params_before"]["encoder"]
    assert nash["encoder_sparsity"] == pytest.approx(
        meta2["sparsity"]["sparsity_hard_encoder"], abs=1e-6
    )

    ft_cfg = FinetuneConfig(
        train=TrainConfig(max_steps=2, batch_size=8, eval_every=2, eval_examples=8)
    )
    final = _finetune(setup, export, ft_cfg, "nash-f2")
    model, _ = load_seq2seq(final)
    final_nash = json.loads((final / "config.json").read_text())["nash"]
    assert final_nash["shapes"] == nash["shapes"] and "finetune" in final_nash
    assert type(model).__name__ == "NashT5ForConditionalGeneration"


def test_cofi_and_sft_arms(setup):
    root, _ = setup
    cofi = arm_config(dict(method="cofi", targets=[0.3]))
    # hidden gates start soft (log_alpha 0.5: P(open) ~ 0.89) so a few dimensions are really pruned
    stage = _run(setup, cofi, None, 0.0, 0.3, "cofi-s1", cfg=_stage_cfg(hidden_mask_init=0.5))
    names = {
        (s["stack"], s["sublayer"], s["target"])
        for s in torch.load(stage / "nash_masks.pt", weights_only=True)["specs"]
    }
    assert ("decoder", "cross", "heads") in names and ("encoder", "ffn", "layer") in names
    assert ("model", "hidden", "units") in names  # the hidden-dimension mask is on by default
    sparsity = json.loads((stage / "stage_meta.json").read_text())["sparsity"]
    assert sparsity["sparsity_target_model"] == 0.3 and 1 <= sparsity["hidden_kept"] < 32
    student, _ = load_seq2seq(stage)
    assert len(student.decoder.block) == 3  # cofi keeps the full decoder depth
    export = prune.materialize_stage(stage, root / "cofi-e1")
    assert (export / "modeling_nash.py").is_file()
    nash = json.loads((export / "config.json").read_text())["nash"]
    assert nash["shapes"]["hidden"] == {"kept": sparsity["hidden_kept"], "full": 32}
    assert nash["params_after"] <= nash["params_before"]
    # the final fine-tune with hidden-state distillation: the student's width is read from its
    # modules (config.d_model stays the teacher's)
    ft_cfg = FinetuneConfig(
        train=TrainConfig(max_steps=2, batch_size=8, eval_every=2, eval_examples=8),
        distill=DistillConfig(kd_weight=0.5, layer_weight=0.01),
    )
    final = _finetune(setup, export, ft_cfg, "cofi-f1")
    assert json.loads((final / "config.json").read_text())["nash"]["shapes"] == nash["shapes"]

    no_hidden = _run(
        setup,
        arm_config(dict(method="cofi", targets=[0.3], hidden=False, name="cofi-nohidden")),
        None,
        0.0,
        0.3,
        "cofi-nohidden-s1",
        cfg=_stage_cfg(steps=2),
    )
    assert not any(
        s["sublayer"] == "hidden"
        for s in torch.load(no_hidden / "nash_masks.pt", weights_only=True)["specs"]
    )
    with pytest.raises(ValueError, match="hidden"):
        arm_config(dict(method="nash", decoder_layers=2, targets=[0.3], hidden=True))

    sft = arm_config(dict(method="sft", decoder_layers=1))
    stage = _run(setup, sft, None, 0.0, 0.0, "sft-s1")
    assert not (stage / "nash_masks.pt").exists()
    export = prune.materialize_stage(stage, root / "sft-e1")
    assert not (export / "modeling_nash.py").exists()  # unpruned shapes: a plain HF directory
    assert json.loads((export / "config.json").read_text())["nash"]["decoder_layers_kept"] == [0]


def test_interrupted_stage_resumes_to_the_same_result(setup):
    root, _ = setup
    arm = arm_config(dict(method="nash", decoder_layers=2, layer_selection="high", targets=[0.3]))
    cfg = _stage_cfg(steps=10)
    whole = _run(setup, arm, None, 0.0, 0.3, "whole", cfg=cfg)

    def crash(step, record):
        if step == 6:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(setup, arm, None, 0.0, 0.3, "resumed", cfg=cfg, callback=crash)
    assert (root / ".resumed.work" / "checkpoint" / "state.json").is_file()
    resumed = _run(setup, arm, None, 0.0, 0.3, "resumed", cfg=cfg)
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (torch.load(d / "nash_masks.pt", weights_only=True) for d in (whole, resumed))
    assert all(torch.equal(ma["masks"][k], mb["masks"][k]) for k in ma["masks"])
    assert all(torch.equal(ma["lagrangian"][k], mb["lagrangian"][k]) for k in ma["lagrangian"])


def test_off_target_stage_keeps_its_final_state_and_says_what_to_change(setup, caplog):
    """A stage whose expected sparsity never comes within epsilon of the target still yields a
    loadable snapshot, marked on_target=false, and the warning tells the user which knobs move
    it."""
    arm = arm_config(dict(method="nash", decoder_layers=2, targets=[0.9]))
    cfg = _stage_cfg(steps=4, head_mask_init=10.0)
    cfg = cfg.model_copy(update={"sparsity_epsilon": 0.01})
    with caplog.at_level("WARNING", logger="nash_core.methods.structured"):
        d = _run(setup, arm, None, 0.0, 0.9, "off_target", cfg=cfg)
    meta = json.loads((d / "stage_meta.json").read_text())
    assert meta["on_target"] is False and meta["best_metrics"] is None
    reached = meta["sparsity"]["sparsity_expected_encoder"]
    assert abs(reached - 0.9) > 0.01
    assert (d / "nash_masks.pt").is_file() and (d / "model.safetensors").is_file()
    message = " ".join(r.getMessage() for r in caplog.records)
    assert (
        f"encoder {reached:.3f}" in message
        and "max_steps" in message
        and "sparsity_epsilon" in message
    )
    prune.materialize_stage(d, setup[0] / "off_target_export")  # the snapshot is usable as is
