"""Modeling code for NASH-pruned T5 / BART exports. Self-contained: imports only torch +
transformers.

A pruned model has per-layer head sets and FFN widths that no stock config can express, so the
export stores them in ``config.json["nash"]["shapes"]`` and these classes resize the stock
modules right after construction, before the weights are loaded:

    shapes = {"encoder": [{"self": [kept head indices] | [] | None, "ffn": units | None}, ...],
              "decoder": [{"self": ..., "cross": ..., "ffn": ...}, ...]}

A head list names the ORIGINAL head indices kept; ``[]`` means no head is left but the sub-layer
still adds its output bias (BART); ``None`` means the whole sub-layer is gone. An FFN of ``None``
is gone (T5: the block skips it; BART: its output bias goes too).

CoFi's hidden-dimension pruning adds ``shapes["hidden"] = {"kept": k, "full": d}``: every
d_model-sized axis (embeddings, BART positions, norms, q/k/v and FFN input columns, output
projection rows, LM head) is resized to k. ``config.d_model`` stays d, so T5's d_model**-0.5
output scale and BART's head size / embedding scale keep their values. T5's RMS norm averages
over the width, so each T5 norm's epsilon becomes eps * d / k (its weights were multiplied by
sqrt(d / k) when the model was materialised); together they give exactly the full-width norm
of a vector whose pruned dimensions are zero.

T5 subtlety: block 0 computes the relative-position bias for all original heads and hands it to
every later block, so a block with fewer heads must take its heads' slice. That happens in the
attention functions registered below under ``nash_t5_sdpa`` / ``nash_t5_eager``; the same names
are registered as mask functions too, without which transformers builds no attention mask at all.
Cross-attention "bias" in T5 is all zeros sized by the first block's head count: it is dropped.

This file is also imported by nash_core (materialisation, loading), so the in-process model and
the exported one run exactly the same code.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import (
    AttentionInterface,
    BartForConditionalGeneration,
    T5ForConditionalGeneration,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.models.t5.modeling_t5 import eager_attention_forward as t5_eager_attention_forward


# ---------------------------------------------------------------------- T5 attention functions
def _position_bias_for(module: nn.Module, position_bias):
    if position_bias is None or getattr(module, "nash_cross", False):
        return None
    heads = getattr(module, "nash_bias_heads", None)
    if heads is None:
        return position_bias
    index = torch.as_tensor(heads, device=position_bias.device)
    return position_bias.index_select(1, index)


def nash_t5_sdpa(module, query, key, value, attention_mask, position_bias=None, **kwargs):
    return sdpa_attention_forward(
        module,
        query,
        key,
        value,
        attention_mask,
        position_bias=_position_bias_for(module, position_bias),
        **kwargs,
    )


def nash_t5_eager(module, query, key, value, attention_mask, position_bias=None, **kwargs):
    return t5_eager_attention_forward(
        module,
        query,
        key,
        value,
        attention_mask,
        position_bias=_position_bias_for(module, position_bias),
        **kwargs,
    )


AttentionInterface.register("nash_t5_sdpa", nash_t5_sdpa)
AttentionInterface.register("nash_t5_eager", nash_t5_eager)
AttentionMaskInterface.register("nash_t5_sdpa", sdpa_mask)
AttentionMaskInterface.register("nash_t5_eager", eager_mask)


# ---------------------------------------------------------------------- replacement modules
class T5SkippedSublayer(nn.Module):
    """A T5 attention sub-layer with no head left: the residual stream passes unchanged."""

    def forward(
        self,
        hidden_states,
        key_value_states=None,
        attention_mask=None,
        position_bias=None,
        cache=None,
        **kwargs,
    ):
        return hidden_states, position_bias, None


class BartHeadlessAttn(nn.Module):
    """A BART attention with no head left: it outputs its output bias (or zeros when dropped).

    Zero-width projections keep the usual attribute names so size accounting still finds them.
    """

    def __init__(self, embed_dim: int, head_dim: int, out_bias: bool):
        super().__init__()
        self.num_heads, self.head_dim = 0, head_dim
        self.q_proj = _linear(embed_dim, 0, False)
        self.k_proj = _linear(embed_dim, 0, False)
        self.v_proj = _linear(embed_dim, 0, False)
        self.out_proj = _linear(0, embed_dim, out_bias)

    def forward(
        self, hidden_states, key_value_states=None, cache=None, attention_mask=None, **kwargs
    ):
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        return self.out_proj(empty), None


def _linear(
    in_features: int, out_features: int, bias: bool, like: torch.Tensor | None = None
) -> nn.Linear:
    """A Linear whose weights are about to be overwritten (zero-width ones warn about init)."""
    kwargs = {} if like is None else {"device": like.device, "dtype": like.dtype}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(in_features, out_features, bias=bias, **kwargs)


def _linear_like(
    old: nn.Linear, in_features: int, out_features: int, bias: bool | None = None
) -> nn.Linear:
    has_bias = old.bias is not None if bias is None else bias
    return _linear(in_features, out_features, has_bias, old.weight)


def _resize_heads(
    attn: nn.Module, names: tuple[str, str, str, str], n_heads: int, head_dim: int
) -> None:
    q, k, v, o = (getattr(attn, n) for n in names)
    inner = n_heads * head_dim
    for name, old in zip(names[:3], (q, k, v)):
        setattr(attn, name, _linear_like(old, old.in_features, inner))
    setattr(attn, names[3], _linear_like(o, inner, o.out_features))


# ---------------------------------------------------------------------- restructuring
def restructure_t5(model: nn.Module, shapes: dict) -> None:
    for stack in ("encoder", "decoder"):
        for block, spec in zip(getattr(model, stack).block, shapes[stack]):
            _t5_attention(block, 0, "SelfAttention", spec["self"], cross=False)
            if stack == "decoder":
                _t5_attention(block, 1, "EncDecAttention", spec["cross"], cross=True)
            _t5_ffn(block, spec["ffn"])
    impl = model.config._attn_implementation
    base = (
        impl.removeprefix("nash_t5_")
        if impl in ("sdpa", "eager", "nash_t5_sdpa", "nash_t5_eager")
        else "sdpa"
    )
    model.set_attn_implementation(f"nash_t5_{base}")


def _t5_attention(block, index: int, attr: str, heads, cross: bool) -> None:
    sub = block.layer[index]
    attn = getattr(sub, attr, None)
    if attn is None:
        return
    attn.nash_cross = cross
    if not heads:
        if getattr(attn, "has_relative_attention_bias", False):
            raise ValueError("a T5 block that owns the relative-position table must keep >= 1 head")
        block.layer[index] = T5SkippedSublayer()
        return
    if len(heads) == attn.n_heads and list(heads) == list(range(attn.n_heads)):
        return
    _resize_heads(attn, ("q", "k", "v", "o"), len(heads), attn.key_value_proj_dim)
    attn.n_heads = len(heads)
    attn.inner_dim = len(heads) * attn.key_value_proj_dim
    attn.nash_bias_heads = tuple(int(h) for h in heads)


def _t5_ffn(block, units) -> None:
    dense = block.layer[-1].DenseReluDense
    if not units:
        block.layer[-1] = nn.Identity()
        return
    for name in ("wi", "wi_0", "wi_1"):
        old = getattr(dense, name, None)
        if old is not None:
            setattr(dense, name, _linear_like(old, old.in_features, units))
    dense.wo = _linear_like(dense.wo, units, dense.wo.out_features)


def restructure_bart(model: nn.Module, shapes: dict) -> None:
    for stack in ("encoder", "decoder"):
        for layer, spec in zip(getattr(model.model, stack).layers, shapes[stack]):
            _bart_attention(layer, "self_attn", spec["self"])
            if stack == "decoder":
                _bart_attention(layer, "encoder_attn", spec["cross"])
            _bart_ffn(layer, spec["ffn"])


def _bart_attention(layer, attr: str, heads) -> None:
    attn = getattr(layer, attr)
    if not heads:
        setattr(
            layer,
            attr,
            BartHeadlessAttn(attn.out_proj.out_features, attn.head_dim, heads is not None),
        )
        return
    if len(heads) != attn.num_heads:
        _resize_heads(attn, ("q_proj", "k_proj", "v_proj", "out_proj"), len(heads), attn.head_dim)
        attn.num_heads = len(heads)


def _bart_ffn(layer, units) -> None:
    layer.fc1 = _linear_like(layer.fc1, layer.fc1.in_features, units or 0)
    layer.fc2 = _linear_like(layer.fc2, units or 0, layer.fc2.out_features, bias=units is not None)


# ---------------------------------------------------------------------- hidden width (CoFi)
def _t5_hidden_targets(model: nn.Module):
    """(module, parameter name, hidden axis) of every d_model-sized parameter of a T5."""
    yield model.shared, "weight", 1
    yield model.lm_head, "weight", 1
    for stack in (model.encoder, model.decoder):
        yield stack.embed_tokens, "weight", 1
        yield stack.final_layer_norm, "weight", 0
        for block in stack.block:
            for sub in block.layer:
                if hasattr(sub, "layer_norm"):
                    yield sub.layer_norm, "weight", 0
                attn = getattr(sub, "SelfAttention", None) or getattr(sub, "EncDecAttention", None)
                if attn is not None:
                    yield from ((getattr(attn, n), "weight", 1) for n in ("q", "k", "v"))
                    yield attn.o, "weight", 0
                dense = getattr(sub, "DenseReluDense", None)
                if dense is not None:
                    yield from (
                        (getattr(dense, n), "weight", 1)
                        for n in ("wi", "wi_0", "wi_1")
                        if hasattr(dense, n)
                    )
                    yield dense.wo, "weight", 0


def _bart_hidden_targets(model: nn.Module):
    yield model.model.shared, "weight", 1
    yield model.lm_head, "weight", 1
    for stack in (model.model.encoder, model.model.decoder):
        yield stack.embed_tokens, "weight", 1
        yield stack.embed_positions, "weight", 1
        for layer in stack.layers:
            for attr in ("self_attn", "encoder_attn"):
                attn = getattr(layer, attr, None)
                if attn is not None:
                    yield from (
                        (getattr(attn, n), "weight", 1) for n in ("q_proj", "k_proj", "v_proj")
                    )
                    yield attn.out_proj, "weight", 0
                    yield attn.out_proj, "bias", 0
            yield layer.fc1, "weight", 1
            yield layer.fc2, "weight", 0
            yield layer.fc2, "bias", 0
    for norm in model.modules():
        if isinstance(norm, nn.LayerNorm):
            yield norm, "weight", 0
            yield norm, "bias", 0


# C901: this file must stay self-contained (shipped with every export), so the per-module-kind
# slicing stays in one function that mirrors nash_core.materialize.
def _shrink_hidden(model: nn.Module, shapes: dict) -> None:  # noqa: C901
    hidden = shapes.get("hidden")
    if not hidden or hidden["kept"] == hidden["full"]:
        return
    k, full = int(hidden["kept"]), int(hidden["full"])
    family = shapes["family"]
    targets = list((_t5_hidden_targets if family == "t5" else _bart_hidden_targets)(model))
    # tied parameters stay tied: one new tensor per old one (the old ones are kept alive in
    # ``replaced`` until the end, so that their ids cannot be reused by a later allocation)
    replaced: dict[int, tuple[nn.Parameter, nn.Parameter]] = {}
    for module, name, axis in targets:
        old = module._parameters.get(name)
        if old is None:
            continue
        new = replaced[id(old)][1] if id(old) in replaced else None
        if new is None:
            if old.shape[axis] != full:
                raise ValueError(
                    f"cannot shrink {type(module).__name__}.{name} {tuple(old.shape)} "
                    f"on axis {axis}: expected width {full}"
                )
            shape = list(old.shape)
            shape[axis] = k
            new = nn.Parameter(
                torch.empty(shape, dtype=old.dtype, device=old.device),
                requires_grad=old.requires_grad,
            )
            replaced[id(old)] = (old, new)
        module._parameters[name] = new
        if isinstance(module, nn.Linear):
            module.in_features, module.out_features = module.weight.shape[1], module.weight.shape[0]
        elif isinstance(module, nn.Embedding):
            module.embedding_dim = k
        elif isinstance(module, nn.LayerNorm):
            module.normalized_shape = (k,)
    if family == "t5":
        for module in model.modules():
            if type(module).__name__ == "T5LayerNorm":
                module.variance_epsilon = model.config.layer_norm_epsilon * full / k
            if hasattr(module, "key_value_proj_dim") and hasattr(module, "d_model"):
                module.d_model = k
    else:
        for module in model.modules():
            if hasattr(module, "embed_dim") and (
                hasattr(module, "q_proj") or hasattr(module, "fc1")
            ):
                module.embed_dim = k


def restructure(model: nn.Module, shapes: dict) -> nn.Module:
    """Resize ``model``'s modules (in place) to the recorded per-layer shapes."""
    {"t5": restructure_t5, "bart": restructure_bart}[shapes["family"]](model, shapes)
    _shrink_hidden(model, shapes)
    return model


# ---------------------------------------------------------------------- exported classes
class NashT5ForConditionalGeneration(T5ForConditionalGeneration):
    """T5 with per-layer heads / FFN widths from ``config.nash["shapes"]``."""

    def __init__(self, config):
        # an mT5 export carries an MT5Config, which lacks T5's flag: mT5 never scales the
        # decoder output by d_model**-0.5 (MT5ForConditionalGeneration has no such step)
        if not hasattr(config, "scale_decoder_outputs"):
            config.scale_decoder_outputs = False
        super().__init__(config)
        restructure(self, config.nash["shapes"])


class NashBartForConditionalGeneration(BartForConditionalGeneration):
    """BART with per-layer heads / FFN widths from ``config.nash["shapes"]``."""

    def __init__(self, config):
        super().__init__(config)
        restructure(self, config.nash["shapes"])


EXPORT_CLASSES = {"t5": NashT5ForConditionalGeneration, "bart": NashBartForConditionalGeneration}
