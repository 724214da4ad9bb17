"""Hard-concrete masks: sampling statistics, deterministic rule, hooks, one sample per step."""

import math

import pruning_tiny as pt
import pytest
import torch

from nash_core.masks import (
    BETA,
    GAMMA,
    HIDDEN,
    LOG_ALPHA_MAX,
    LOG_ALPHA_MIN,
    ZETA,
    GroupSpec,
    HardConcrete,
    MaskSet,
    plan_groups,
)


def _group(values, min_keep=0):
    spec = GroupSpec("encoder", "ffn", "units", (0,), len(values), (min_keep,), 0.0)
    g = HardConcrete(spec)
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([values]))
    return g


def test_sampled_nonzero_rate_matches_closed_form():
    torch.manual_seed(0)
    g = _group([-2.0, -0.5, 0.0, 1.0, 3.0])
    n, hits = 4000, torch.zeros(5)
    for _ in range(n):
        g.resample()
        hits += (g.sample(0) > 0).float()
    p = torch.sigmoid(g.log_alpha[0] - BETA * math.log(-GAMMA / ZETA)).detach()
    assert torch.allclose(hits / n, p, atol=0.03)
    assert torch.allclose(g.prob_nonzero()[0].detach(), p)


def test_deterministic_zeroes_round_n_minus_sum_p_smallest():
    g = _group([-3.0, 2.0, -1.0, 4.0, 0.5, -5.0])
    p = g.prob_nonzero().detach()[0]
    n_zero = round(6 - float(p.sum()))
    z = g.deterministic()[0]
    zeroed = torch.nonzero(z == 0).flatten().tolist()
    assert len(zeroed) == n_zero
    assert zeroed == sorted(torch.argsort(g.log_alpha[0])[:n_zero].tolist())
    survivors = z != 0
    expected = torch.sigmoid(g.log_alpha[0] / BETA * 0.8).detach()
    assert torch.allclose(z[survivors], expected[survivors])


def test_min_keep_and_clamp():
    g = _group([-5.0, -5.0, -5.0], min_keep=1)
    assert int((g.deterministic()[0] > 0).sum()) == 1
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([[10.0, -10.0, 0.0]]))
    g.clamp_()
    la = g.log_alpha.detach()
    assert float(la.max()) == pytest.approx(LOG_ALPHA_MAX) and float(la.min()) == pytest.approx(
        LOG_ALPHA_MIN
    )


def test_init_distribution():
    torch.manual_seed(0)
    model = pt.t5(d_ff=400)
    masks = MaskSet(plan_groups(model, head_init=10.0, ffn_init=0.0))
    heads, ffn = (
        masks.groups[n].log_alpha.detach() for n in ("encoder_self_heads", "encoder_ffn_units")
    )
    assert abs(float(heads.mean()) - 10.0) < 0.01
    assert abs(float(ffn.mean())) < 0.01 and 0.005 < float(ffn.std()) < 0.015


def test_nash_plan_masks_only_encoder_and_cofi_protects_cache_owner():
    model = pt.bart()
    nash = MaskSet(plan_groups(model))
    assert sorted(nash.groups) == ["encoder_ffn_units", "encoder_self_heads"]
    cofi = plan_groups(model, stacks=("encoder", "decoder"), sublayers=True, cross=True)
    by_name = {s.name: s for s in cofi}
    assert by_name["decoder_self_heads"].min_keep == (1, 0, 0)
    assert by_name["decoder_self_layer"].layers == (
        1,
        2,
    )  # layer 0 owns the KV-cache length: no gate
    assert by_name["decoder_cross_layer"].layers == (0, 1, 2)


@pytest.mark.parametrize("make", [pt.t5, pt.bart], ids=["t5", "bart"])
def test_hooks_scale_heads_and_units_and_are_removable(make):
    model = make()
    b = pt.batch()
    with torch.no_grad():
        ref = model(**b).logits
    masks = MaskSet(
        plan_groups(model, stacks=("encoder", "decoder"), sublayers=True, cross=True)
    ).attach(model)
    with torch.no_grad():
        for g in masks.groups.values():
            g.log_alpha.fill_(LOG_ALPHA_MAX)
        masks.groups["encoder_self_heads"].log_alpha[1, 2] = LOG_ALPHA_MIN
        masks.groups["decoder_ffn_units"].log_alpha[0, :5] = LOG_ALPHA_MIN
        masked = model(**b).logits
    assert (masked - ref).abs().max() > 1e-4
    masks.detach()
    with torch.no_grad():
        assert torch.equal(model(**b).logits, ref)


def test_one_sample_per_step_and_gradients():
    model = pt.t5()
    masks = MaskSet(plan_groups(model, head_init=1.0, ffn_init=0.0)).attach(model)
    model.train()
    b = pt.batch()
    first = model(**b).loss
    second = model(**b).loss  # a second micro-batch of the same step: same sample
    assert first.item() == second.item()
    (first + second).backward()  # both graphs are independent: no "backward twice" error
    assert all(
        g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0
        for g in masks.groups.values()
    )
    masks.resample()
    assert model(**b).loss.item() != first.item()
    model.eval()  # eval: the deterministic mask, identical across calls
    with torch.no_grad():
        assert torch.equal(model(**b).logits, model(**b).logits)


def test_eager_and_sdpa_agree_under_masks():
    outs = []
    for attn in ("eager", "sdpa"):
        model = pt.t5(attn=attn, seed=3)
        masks = MaskSet(plan_groups(model, head_init=0.5, ffn_init=0.5)).attach(model)
        torch.manual_seed(7)
        masks.resample()
        model.train()
        outs.append(model(**pt.batch()).logits.detach())
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


@pytest.mark.parametrize("make", [pt.t5, pt.bart], ids=["t5", "bart"])
def test_hidden_mask_zeroes_closed_dimensions_of_the_residual_stream(make):
    model = make()
    b = pt.batch()
    with torch.no_grad():
        ref = model(**b).logits
    masks = MaskSet(
        plan_groups(
            model,
            stacks=("encoder", "decoder"),
            hidden=True,
            head_init=LOG_ALPHA_MAX,
            ffn_init=LOG_ALPHA_MAX,
            hidden_init=LOG_ALPHA_MAX,
        )
    ).attach(model)
    assert masks.groups[HIDDEN].spec.units == 32 and masks.groups[HIDDEN].spec.min_keep == (1,)
    closed = [3, 17, 30]
    with (
        torch.no_grad()
    ):  # open gates soft enough that a training sample is not clamped (gradients)
        masks.groups[HIDDEN].log_alpha.fill_(2.0)
        masks.groups[HIDDEN].log_alpha[0, closed] = LOG_ALPHA_MIN
    for train in (
        False,
        True,
    ):  # deterministic mask, then a training sample (closed gates sample 0)
        model.train(train)
        out = model(**b, output_hidden_states=True)
        for states in (out.encoder_hidden_states, out.decoder_hidden_states):
            for h in states:  # embeddings and every layer output (BART: after its LayerNorm)
                assert float(h[..., closed].detach().abs().max()) == 0.0
                assert float(h.detach().abs().max()) > 0
    assert (out.logits - ref).abs().max() > 1e-3
    out.loss.backward()  # gradients reach the hidden gates through every residual write
    assert float(masks.groups[HIDDEN].log_alpha.grad.abs().sum()) > 0
    masks.detach()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**b).logits, ref)
