"""Materialised models compute what the masked model computed, in fewer parameters."""

import pruning_tiny as pt
import pytest
import torch

from nash_core.layer_selection import keep_decoder_layers
from nash_core.masks import HIDDEN, LOG_ALPHA_MIN, MaskSet, plan_groups
from nash_core.materialize import materialize_masks

GEN = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, suppress_tokens=[0, 1])
MODELS = {
    "t5-sdpa": lambda: pt.t5(dec=4),
    "t5-eager": lambda: pt.t5(dec=4, attn="eager"),
    "t5-gated": lambda: pt.t5(gated=True, dec=4),
    "bart-sdpa": lambda: pt.bart(dec=4),
    "bart-eager": lambda: pt.bart(dec=4, attn="eager"),
}


def _masked(make, cofi: bool, seed: int = 3, hidden: bool = False):
    model = make()
    keep_decoder_layers(model, [0, 2, 3])
    kwargs = (
        dict(stacks=("encoder", "decoder"), sublayers=True, cross=True, hidden=hidden)
        if cofi
        else {}
    )
    masks = MaskSet(plan_groups(model, **kwargs)).attach(model)
    pt.randomize_masks(masks, seed=seed)
    return model.eval(), masks


MODES = {
    "nash": dict(cofi=False),
    "cofi": dict(cofi=True),
    "cofi-hidden": dict(cofi=True, hidden=True),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_masked_model(name, mode):
    model, masks = _masked(MODELS[name], **MODES[mode])
    b = pt.batch()
    with torch.no_grad():
        masked = model(**b).logits
    before = sum(p.numel() for p in model.parameters())
    materialize_masks(model, masks)
    with torch.no_grad():
        pruned = model(**b).logits
    assert (masked - pruned).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in model.parameters()) < before
    if mode == "cofi-hidden":
        kept = int((masks.deterministic()[HIDDEN] > 0).sum())
        assert 0 < kept < 32  # the width really shrank ...
        assert model.get_input_embeddings().weight.shape[1] == kept
        assert model.get_output_embeddings().weight.shape[1] == kept
        assert model.config.nash["shapes"]["hidden"] == {"kept": kept, "full": 32}


def _t5_eps(gated: bool, untie: bool, eps: float = 0.5):
    """A T5 whose RMS-norm epsilon matters (random tiny activations dwarf the default 1e-6).

    transformers 5 always ties T5's LM head to the embedding (T5Config forces
    tie_word_embeddings=True; the flag only switches the d_model**-0.5 output scale), so the
    untied case is built by hand, in process only.
    """
    model = pt.t5(gated=gated, dec=4)
    model.config.layer_norm_epsilon = eps
    for module in model.modules():
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon = eps
    if untie:
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() * 1.5)
    return model


@pytest.mark.parametrize("untie", [False, True], ids=["tied", "untied"])
@pytest.mark.parametrize("gated", [False, True], ids=["t5", "t5-gated"])
def test_hidden_mask_t5_norm_rescale_is_exact_with_large_eps(gated, untie):
    # the kept width k < d changes RMS norm's mean: weights * sqrt(d/k) and eps * d/k restore it
    # (a wrong epsilon such as eps * k/d is off by ~0.27 here); a tied LM head needs the hidden
    # gate divided out of the decoder's final norm, an untied one must not get that correction
    model, masks = _masked(lambda: _t5_eps(gated, untie), cofi=True, hidden=True, seed=4)
    assert (model.lm_head.weight is model.shared.weight) == (not untie)
    b = pt.batch()
    with torch.no_grad():
        masked = model(**b).logits
    materialize_masks(model, masks)
    with torch.no_grad():
        pruned = model(**b).logits
    assert (masked - pruned).abs().max().item() <= 1e-5
    assert (model.lm_head.weight is model.shared.weight) == (not untie)  # ties survive, none appear
    assert model.encoder.embed_tokens.weight is model.shared.weight
    kept = model.config.nash["shapes"]["hidden"]["kept"]
    norm = model.encoder.final_layer_norm
    assert norm.weight.shape == (kept,) and norm.variance_epsilon == pytest.approx(0.5 * 32 / kept)


@pytest.mark.parametrize("hidden", [False, True], ids=["cofi", "cofi-hidden"])
@pytest.mark.parametrize(
    "make", [lambda: pt.t5(enc=3, dec=4), lambda: pt.bart(dec=4)], ids=["t5", "bart"]
)
def test_cached_generation_after_materialise(make, hidden):
    # enc=3: a T5 decoder deeper than its encoder needs a growing cache (evaluate.fresh_cache)
    model, masks = _masked(make, cofi=True, seed=5, hidden=hidden)
    with torch.no_grad():  # drop decoder layer 1's self-attention (its KV-cache slot goes unused)
        masks.groups["decoder_self_layer"].log_alpha[0] = LOG_ALPHA_MIN
    b = pt.batch()
    ids = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    reference = model.generate(**ids, use_cache=False, **GEN)
    materialize_masks(model, masks)
    shapes = model.config.nash["shapes"]
    assert shapes["decoder"][1]["self"] is None
    assert torch.equal(model.generate(**ids, use_cache=True, **GEN), reference)
    assert torch.equal(model.generate(**ids, use_cache=False, **GEN), reference)


def test_shapes_record_original_head_indices():
    model, masks = _masked(MODELS["t5-sdpa"], cofi=False)
    det = masks.deterministic()["encoder_self_heads"]
    materialize_masks(model, masks)
    shapes = model.config.nash["shapes"]
    assert shapes["family"] == "t5"
    for layer, row in zip(shapes["encoder"], det):
        assert layer["self"] == [int(h) for h in torch.nonzero(row).flatten()]
    for layer, units in zip(shapes["encoder"], masks.deterministic()["encoder_ffn_units"]):
        assert (layer["ffn"] or 0) == int((units > 0).sum())
    assert all(
        layer["self"] == [0, 1, 2, 3] for layer in shapes["decoder"]
    )  # NASH leaves the decoder whole
