"""Materialised models compute what the masked model computed, in fewer parameters."""

import pytest
import torch

import pruning_tiny as pt
from nash_core.layer_selection import keep_decoder_layers
from nash_core.masks import LOG_ALPHA_MIN, MaskSet, plan_groups
from nash_core.materialize import materialize

GEN = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, suppress_tokens=[0, 1])
MODELS = {
    "t5-sdpa": lambda: pt.t5(dec=4),
    "t5-eager": lambda: pt.t5(dec=4, attn="eager"),
    "t5-gated": lambda: pt.t5(gated=True, dec=4),
    "bart-sdpa": lambda: pt.bart(dec=4),
    "bart-eager": lambda: pt.bart(dec=4, attn="eager"),
}


def _masked(make, cofi: bool, seed: int = 3):
    model = make()
    keep_decoder_layers(model, [0, 2, 3])
    kwargs = dict(stacks=("encoder", "decoder"), sublayers=True, cross=True) if cofi else {}
    masks = MaskSet(plan_groups(model, **kwargs)).attach(model)
    pt.randomize_masks(masks, seed=seed)
    return model.eval(), masks


@pytest.mark.parametrize("cofi", [False, True], ids=["nash", "cofi"])
@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_masked_model(name, cofi):
    model, masks = _masked(MODELS[name], cofi)
    b = pt.batch()
    with torch.no_grad():
        masked = model(**b).logits
    before = sum(p.numel() for p in model.parameters())
    materialize(model, masks)
    with torch.no_grad():
        pruned = model(**b).logits
    assert (masked - pruned).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in model.parameters()) < before


@pytest.mark.parametrize("make", [lambda: pt.t5(enc=3, dec=4), lambda: pt.bart(dec=4)], ids=["t5", "bart"])
def test_cached_generation_after_materialise(make):
    # enc=3: a T5 decoder deeper than its encoder needs an explicit growing cache (stack-notes)
    model, masks = _masked(make, cofi=True, seed=5)
    with torch.no_grad():  # drop decoder layer 1's self-attention (its KV-cache slot goes unused)
        masks.groups["decoder_self_layer"].log_alpha[0] = LOG_ALPHA_MIN
    b = pt.batch()
    ids = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    reference = model.generate(**ids, use_cache=False, **GEN)
    materialize(model, masks)
    shapes = model.config.nash["shapes"]
    assert shapes["decoder"][1]["self"] is None
    assert torch.equal(model.generate(**ids, use_cache=True, **GEN), reference)
    assert torch.equal(model.generate(**ids, use_cache=False, **GEN), reference)


def test_shapes_record_original_head_indices():
    model, masks = _masked(MODELS["t5-sdpa"], cofi=False)
    det = masks.deterministic()["encoder_self_heads"]
    materialize(model, masks)
    shapes = model.config.nash["shapes"]
    assert shapes["family"] == "t5"
    for layer, row in zip(shapes["encoder"], det):
        assert layer["self"] == [int(h) for h in torch.nonzero(row).flatten()]
    for layer, units in zip(shapes["encoder"], masks.deterministic()["encoder_ffn_units"]):
        assert (layer["ffn"] or 0) == int((units > 0).sum())
    assert all(layer["self"] == [0, 1, 2, 3] for layer in shapes["decoder"])  # NASH leaves the decoder whole
