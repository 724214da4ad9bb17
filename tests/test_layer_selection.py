"""Shallow decoder: selection formulas, layer removal, KV cache and T5 position table."""

import pruning_tiny as pt
import pytest
import torch

from nash_core.errors import ModelError
from nash_core.layer_selection import keep_decoder_layers, select_layers

GEN = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, suppress_tokens=[0, 1])


def test_uniform_formula():
    assert select_layers(12, 1) == [0]
    assert select_layers(12, 3) == [0, 5, 11]
    assert select_layers(12, 4) == [0, 3, 7, 11]
    assert select_layers(6, 2) == [0, 5]
    assert select_layers(5, 5) == [0, 1, 2, 3, 4]


def test_low_high_custom_and_errors():
    assert select_layers(6, 2, "low") == [0, 1]
    assert select_layers(6, 2, "high") == [4, 5]
    assert select_layers(6, 2, "custom", [1, 4]) == [1, 4]
    with pytest.raises(ModelError):
        select_layers(6, 7)
    with pytest.raises(ModelError):
        select_layers(6, 2, "custom", [4, 1])
    with pytest.raises(ModelError):
        select_layers(6, 2, "custom", [1, 6])


def _generate(model, use_cache):
    b = pt.batch()
    return model.generate(
        input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=use_cache, **GEN
    )


@pytest.mark.parametrize(
    "make", [pt.t5, lambda **kw: pt.t5(gated=True, **kw), pt.bart], ids=["t5", "t5-gated", "bart"]
)
def test_cache_equals_no_cache_after_removal(make):
    model = make(enc=2, dec=4)
    keep_decoder_layers(model, [1, 3])
    cached, plain = _generate(model, True), _generate(model, False)
    assert torch.equal(cached, plain)
    assert len(set(cached[0].tolist())) > 1  # a real sequence, not one repeated token
    layers = model.decoder.block if hasattr(model, "decoder") else model.model.decoder.layers
    assert len(layers) == 2
    assert model.config.nash_decoder_layers_kept == [1, 3]


def test_config_and_layer_idx_updated():
    model = pt.t5(dec=4)
    keep_decoder_layers(model, [0, 2, 3])
    assert model.config.num_decoder_layers == 3 and model.decoder.config.num_layers == 3
    idx = [
        (b.layer[0].SelfAttention.layer_idx, b.layer[1].EncDecAttention.layer_idx)
        for b in model.decoder.block
    ]
    assert idx == [(0, 0), (1, 1), (2, 2)]
    keep_decoder_layers(model, [1, 2])  # composes with the first removal
    assert model.config.nash_decoder_layers_kept == [2, 3]
    bart = pt.bart(dec=4)
    keep_decoder_layers(bart, [3])
    assert bart.config.decoder_layers == 1 and bart.model.decoder.layers[0].self_attn.layer_idx == 0


def test_high_on_t5_keeps_position_table():
    model = pt.t5(dec=4)
    table = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.clone()
    keep_decoder_layers(model, select_layers(4, 2, "high"))
    first = model.decoder.block[0].layer[0].SelfAttention
    assert first.has_relative_attention_bias and torch.equal(
        first.relative_attention_bias.weight, table
    )
    b = pt.batch()
    with torch.no_grad():
        with_table = model(**b).logits
        del first.relative_attention_bias
        first.has_relative_attention_bias = False
        without_table = model(**b).logits
    assert (with_table - without_table).abs().max() > 1e-3
