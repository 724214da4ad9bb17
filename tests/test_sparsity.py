"""Exact accounting (expected size of deterministic masks == materialised count) and the
Lagrangian."""

import math

import pruning_tiny as pt
import pytest
import torch

from nash_core.config import TrainConfig
from nash_core.masks import HIDDEN, MaskSet, plan_groups
from nash_core.materialize import materialize_masks
from nash_core.sparsity import (
    Constraint,
    Lagrangian,
    SizeModel,
    SparsityHook,
    count_parameters,
    count_prunable,
    hard_values,
    ramp,
)
from nash_core.train import train_seq2seq

MODELS = {"t5": pt.t5, "t5-gated": lambda: pt.t5(gated=True), "bart": pt.bart}


@pytest.mark.parametrize("hidden", [False, True], ids=["cofi", "cofi-hidden"])
@pytest.mark.parametrize("name", MODELS)
def test_deterministic_size_equals_materialised_count(name, hidden):
    model = MODELS[name]()
    masks = MaskSet(
        plan_groups(model, stacks=("encoder", "decoder"), sublayers=True, cross=True, hidden=hidden)
    ).attach(model)
    pt.randomize_masks(masks)
    sizes = SizeModel(model, masks)
    ones = {n: torch.ones_like(g.log_alpha, dtype=torch.float64) for n, g in masks.groups.items()}
    assert float(sizes.total(ones)) == count_parameters(model)  # nothing pruned: every parameter
    hard = hard_values(masks)
    assert any(float(v.min()) == 0.0 for v in hard.values())  # something is really pruned
    if hidden:
        assert 0 < float(hard[HIDDEN].sum()) < 32
    expected = {
        s: float(sizes.size(hard, s)) for s in [("encoder",), ("decoder",), ("encoder", "decoder")]
    }
    total = float(sizes.total(hard))
    materialize_masks(model, masks)
    for stacks, size in expected.items():
        assert count_prunable(model, stacks) == size
    # embeddings, LM head, norms (T5's go with a dropped sub-layer), positions: all of it, exactly
    assert count_parameters(model) == total == sum(p.numel() for p in model.parameters())


def test_expected_size_scales_every_width_factor_with_the_hidden_mask():
    model = pt.bart(d_model=32, ffn=48, heads=4)
    masks = MaskSet(plan_groups(model, sublayers=True, hidden=True))
    sizes = SizeModel(model, masks)
    ones = {n: torch.ones_like(g.log_alpha) for n, g in masks.groups.items()}
    values = dict(ones)
    values[HIDDEN] = torch.full((1, 32), 0.25)  # 8 of 32 dimensions expected open
    per_head_h, per_head_c, per_unit_h, per_unit_c = 4 * 8, 3 * 8, 2, 1  # BART: biases do not scale
    layer = 4 * (per_head_h * 8 + per_head_c) + 8 + 48 * (per_unit_h * 8 + per_unit_c) + 8
    assert float(sizes.size(values, ("encoder",))) == pytest.approx(2 * layer)
    assert float(sizes.size(ones, ("encoder",))) == count_prunable(model, ("encoder",))
    # differentiable in the hidden gate's log_alpha, as the Lagrangian needs
    masks.groups[HIDDEN].log_alpha.grad = None
    sizes.sparsity(masks.probs(), ("encoder", "decoder")).backward()
    assert float(masks.groups[HIDDEN].log_alpha.grad.abs().sum()) > 0


def test_expected_size_formula_with_layer_gate():
    model = pt.bart(d_model=32, ffn=48, heads=4)
    masks = MaskSet(plan_groups(model, sublayers=True))
    sizes = SizeModel(model, masks)
    ones = {n: torch.ones_like(g.log_alpha) for n, g in masks.groups.items()}
    assert float(sizes.size(ones, ("encoder",))) == count_prunable(model, ("encoder",))
    values = dict(ones)
    values["encoder_self_heads"] = torch.tensor([[1.0, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    values["encoder_self_layer"] = torch.tensor([[0.5], [1.0]])
    per_head, out_bias = 4 * 32 * 8 + 3 * 8, 32
    full = count_prunable(model, ("encoder",))
    drop = (4 * per_head + out_bias) - 0.5 * (1.5 * per_head + out_bias)
    assert float(sizes.size(values, ("encoder",))) == pytest.approx(full - drop)


def test_ramp_and_lagrangian_sign():
    assert ramp(0, 0.2, 0.4, 10) == pytest.approx(0.2)
    assert ramp(5, 0.2, 0.4, 10) == pytest.approx(0.3)
    assert ramp(50, 0.2, 0.4, 10) == 0.4
    assert ramp(0, 0.0, 0.3, 0) == 0.3
    lag = Lagrangian(["encoder"])
    with torch.no_grad():
        lag.l1["encoder"].fill_(2.0)
        lag.l2["encoder"].fill_(3.0)
    assert lag("encoder", torch.tensor(0.5), 0.3).item() == pytest.approx(2 * 0.2 + 3 * 0.04)


def test_multipliers_are_trained_by_ascent():
    model = pt.t5()
    masks = MaskSet(plan_groups(model)).attach(model)
    hook = SparsityHook(
        model,
        masks,
        [Constraint("encoder", ("encoder",), 0.0, 0.5)],
        warmup_steps=0,
        mask_lr=0.1,
        lagrangian_lr=0.1,
        epsilon=0.02,
    )
    groups = hook.param_groups(model)
    assert groups[1]["maximize"] is True and groups[0]["lr"] == 0.1
    opt = torch.optim.AdamW(groups)
    loss, _ = hook.extra_loss(model, None, None, 0)
    loss.backward()
    opt.step()
    # s (~0.05) < t (0.5): ascent moves l1 down (so minimising pushes s up) and l2 up
    assert hook.lagrangian.l1["encoder"].item() < 0 < hook.lagrangian.l2["encoder"].item()


def test_lagrangian_reaches_target_on_tiny_model(tmp_path):
    torch.manual_seed(0)
    model = pt.t5(d_ff=64)
    masks = MaskSet(plan_groups(model)).attach(model)
    hook = SparsityHook(
        model,
        masks,
        [Constraint("encoder", ("encoder",), 0.0, 0.4)],
        warmup_steps=20,
        mask_lr=0.1,
        lagrangian_lr=0.1,
        epsilon=0.02,
    )
    history = []
    cfg = TrainConfig(
        max_steps=100,
        batch_size=4,
        lr=1e-3,
        eval_every=5,
        eval_examples=8,
        checkpoint_every=1000,
        log_every=10,
    )
    result = train_seq2seq(
        model,
        pt.tokenizer(),
        pt.dataset(16),
        pt.dataset(8, 1),
        cfg,
        tmp_path,
        hooks=[hook],
        callback=lambda step, rec: history.append(rec),
    )
    start = next(
        r["sparsity_expected_encoder"] for r in history if "sparsity_expected_encoder" in r
    )
    assert start < 0.15  # it started far from the target ...
    assert result.best_metrics is not None  # ... and an on-target checkpoint was kept
    assert abs(result.best_metrics["sparsity_expected_encoder"] - 0.4) <= 0.02
    assert (tmp_path / "best" / "nash_masks.pt").is_file()
    evals = [r for r in history if "eval_sparsity_expected_encoder" in r]
    assert all(
        bool(r["eval_eligible"]) == (abs(r["eval_sparsity_expected_encoder"] - 0.4) <= 0.02)
        for r in evals
    )


def test_cofi_with_hidden_mask_trains_toward_its_target(tmp_path):
    # every CoFi group including the hidden dimension, one model-wide constraint: the multipliers
    # push the expected sparsity up from ~0.05 towards 0.4, the hidden gates take part
    torch.manual_seed(0)
    model = pt.bart(d_model=32, ffn=64)
    masks = MaskSet(
        plan_groups(
            model,
            stacks=("encoder", "decoder"),
            sublayers=True,
            cross=True,
            hidden=True,
            head_init=3.0,
            ffn_init=0.5,
            hidden_init=3.0,
        )
    ).attach(model)
    hook = SparsityHook(
        model,
        masks,
        [Constraint("model", ("encoder", "decoder"), 0.0, 0.4)],
        warmup_steps=10,
        mask_lr=0.1,
        lagrangian_lr=0.1,
        epsilon=0.05,
    )
    history = []
    cfg = TrainConfig(
        max_steps=30,
        batch_size=4,
        lr=1e-3,
        eval_every=10,
        eval_examples=8,
        checkpoint_every=1000,
        log_every=5,
    )
    train_seq2seq(
        model,
        pt.tokenizer(),
        pt.dataset(16),
        pt.dataset(8, 1),
        cfg,
        tmp_path,
        hooks=[hook],
        callback=lambda step, rec: history.append(rec),
    )
    logs = [r for r in history if "sparsity_expected_model" in r]
    evals = [r for r in history if "eval_sparsity_expected_model" in r]
    assert all(math.isfinite(r["train_loss"]) for r in logs)
    assert evals[0]["eval_sparsity_expected_model"] < 0.1
    assert (
        evals[-1]["eval_sparsity_expected_model"] > evals[0]["eval_sparsity_expected_model"] + 0.1
    )
    assert (
        logs[-1]["lambda1_model"] < 0 < logs[-1]["lambda2_model"]
    )  # ascent while below the target
    assert (
        evals[-1]["eval_hidden_expected"] < evals[0]["eval_hidden_expected"]
    )  # fewer open dimensions
    assert evals[-1]["eval_hidden_kept"] <= 32
