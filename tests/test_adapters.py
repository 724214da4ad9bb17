"""Adapters locate every prunable module and read unit costs from the modules themselves."""

import pruning_tiny as pt
import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from nash_core.adapters import get_adapter, supported_model_types
from nash_core.errors import ModelError


def test_t5_relu_locations_and_costs():
    model = pt.t5(d_model=32, d_ff=48, heads=4, d_kv=6, enc=2, dec=3)
    a = get_adapter(model)
    assert a.family == "t5"
    assert len(a.layers(model, "encoder")) == 2 and len(a.layers(model, "decoder")) == 3
    ref = a.attention(a.layers(model, "encoder")[1], "encoder", 1, "self")
    assert ref.q is model.encoder.block[1].layer[0].SelfAttention.q
    assert (ref.num_heads, ref.head_dim) == (4, 6)
    assert ref.params_per_head == 4 * 32 * 6  # d_kv * heads (24) != d_model (32)
    assert ref.fixed_params == 0
    assert a.attention(a.layers(model, "encoder")[0], "encoder", 0, "cross") is None
    cross = a.attention(a.layers(model, "decoder")[2], "decoder", 2, "cross")
    assert cross.module is model.decoder.block[2].layer[1].EncDecAttention
    ffn = a.ffn(a.layers(model, "encoder")[0], "encoder", 0)
    assert ffn.units == 48 and ffn.params_per_unit == 2 * 32 and len(ffn.inputs) == 1


def test_t5_gated_ffn_counts_three_matrices():
    model = pt.t5(gated=True, d_model=32, d_ff=48)
    ffn = get_adapter(model).ffn(model.encoder.block[0], "encoder", 0)
    assert [lin is model.encoder.block[0].layer[1].DenseReluDense.wi_0 for lin in ffn.inputs] == [
        True,
        False,
    ]
    assert ffn.params_per_unit == 3 * 32


def test_bart_costs_include_biases():
    model = pt.bart(d_model=32, ffn=48, heads=4)
    a = get_adapter(model)
    ref = a.attention(model.model.decoder.layers[0], "decoder", 0, "cross")
    assert ref.module is model.model.decoder.layers[0].encoder_attn
    assert ref.params_per_head == 4 * 32 * 8 + 3 * 8 and ref.fixed_params == 32
    ffn = a.ffn(model.model.encoder.layers[1], "encoder", 1)
    assert ffn.params_per_unit == 2 * 32 + 1 and ffn.fixed_params == 32


def test_unsupported_model_type_lists_supported():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=8))
    with pytest.raises(ModelError) as err:
        get_adapter(gpt2)
    assert "gpt2" in str(err.value)
    for t in supported_model_types():
        assert t in str(err.value)
    assert get_adapter("mt5").family == "t5"
