"""Where things live inside each supported encoder-decoder family.

Masks, sparsity accounting, layer removal and materialisation never touch a model's attributes
directly: they ask the family's adapter for the layer lists, each layer's attention and FFN
projections, and the family's special cases (T5's single relative-position table, the KV-cache
slot that decoder layer 0 owns). Adding a family means adding one adapter here.

Every number (heads, head size, FFN width) is read from the modules themselves, never from the
config: ``d_kv`` need not equal ``d_model / num_heads`` (t5-3b), and a materialised model has
per-layer widths that no stock config can express.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from torch import nn

from nash_core.errors import ModelError

Stack = Literal["encoder", "decoder"]
AttnKind = Literal["self", "cross"]


@dataclass(frozen=True)
class AttentionRef:
    """One attention sub-layer: its module and projections (q, k, v in; o out)."""

    stack: Stack
    layer: int
    kind: AttnKind
    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int

    @property
    def num_heads(self) -> int:
        return self.q.out_features // self.head_dim

    @property
    def weight_params(self) -> int:
        """q/k/v/o weights of the whole sub-layer: every head's rows and columns."""
        return sum(p.weight.numel() for p in (self.q, self.k, self.v, self.o))

    @property
    def unit_bias_params(self) -> int:
        """q/k/v biases (they go with the heads; none in T5)."""
        return sum(p.bias.numel() for p in (self.q, self.k, self.v) if p.bias is not None)

    @property
    def params_per_head(self) -> int:
        """q/k/v rows + o columns of one head, with the q/k/v biases where the family has them."""
        if self.num_heads == 0:
            return 0
        return (self.weight_params + self.unit_bias_params) // self.num_heads

    @property
    def fixed_params(self) -> int:
        """Parameters that go only with the whole sub-layer (BART's output bias)."""
        return self.o.bias.numel() if self.o.bias is not None else 0


@dataclass(frozen=True)
class FFNRef:
    """One feed-forward sub-layer: input projections (two when gated) and the output projection."""

    stack: Stack
    layer: int
    inputs: tuple[nn.Linear, ...]
    output: nn.Linear

    @property
    def units(self) -> int:
        return self.output.in_features

    @property
    def weight_params(self) -> int:
        """Input and output projection weights of the whole sub-layer."""
        return sum(p.weight.numel() for p in (*self.inputs, self.output))

    @property
    def unit_bias_params(self) -> int:
        """Input projection biases (they go with the units)."""
        return sum(p.bias.numel() for p in self.inputs if p.bias is not None)

    @property
    def params_per_unit(self) -> int:
        """Rows of every input projection (+ their biases) and one column of the output."""
        if self.units == 0:
            return 0
        return (self.weight_params + self.unit_bias_params) // self.units

    @property
    def fixed_params(self) -> int:
        return self.output.bias.numel() if self.output.bias is not None else 0


class Adapter(ABC):
    """Family-independent view of an encoder-decoder model. Subclasses fill in the locations:
    the ``@abstractmethod`` ones are required (a family that forgets one fails when it is
    instantiated, not in the middle of a pruning stage); the rest have family-neutral defaults."""

    family: str = ""
    model_types: tuple[str, ...] = ()

    @abstractmethod
    def layers(self, model: nn.Module, stack: Stack) -> nn.ModuleList: ...

    @abstractmethod
    def attention(
        self, layer: nn.Module, stack: Stack, index: int, kind: AttnKind
    ) -> AttentionRef | None:
        """The attention sub-layer, or None when the layer has none (encoder cross) or it was
        dropped."""
        ...

    @abstractmethod
    def ffn(self, layer: nn.Module, stack: Stack, index: int) -> FFNRef | None: ...

    @abstractmethod
    def set_decoder_depth(self, model: nn.Module, k: int) -> None:
        """Update every config copy that states the decoder depth."""
        ...

    def move_position_table(self, old_first: nn.Module, new_first: nn.Module) -> None:
        """Give the new first decoder layer whatever only the old first layer owned."""

    # ------------------------------------------------------------------ hidden dimension (CoFi)
    # The residual stream is written by the embedding output and by every attention / FFN output
    # projection; the hidden-dimension mask gates exactly those writes (masks.py), so a masked
    # dimension of the residual stream is zero everywhere. What else the family needs for that
    # (BART's LayerNorms) and for materialisation is described by the methods below.

    def hidden_size(self, model: nn.Module) -> int:
        """The residual-stream width of ``model`` as its modules have it (not the config)."""
        return model.get_input_embeddings().embedding_dim

    @abstractmethod
    def embedding_writes(self, model: nn.Module) -> list[nn.Module]:
        """Modules whose output is the embedding's write into the residual stream (per stack)."""
        ...

    def hidden_norms(self, model: nn.Module) -> list[nn.Module]:
        """Mean-subtracting LayerNorms that must be computed over the kept dimensions only."""
        return []

    def rms_norms(self, model: nn.Module) -> list[nn.Module]:
        """RMS norms (mean of squares over the width): rescaled when the width shrinks."""
        return []

    def sublayer_norm(
        self, layer: nn.Module, stack: Stack, index: int, kind: str
    ) -> nn.Module | None:
        """A norm that belongs to the sub-layer and disappears with it (T5 pre-norm), else None."""
        return None

    def output_norm(self, model: nn.Module) -> nn.Module | None:
        """The norm whose output feeds the LM head (used when the LM head is tied to the
        embedding)."""
        return None

    @abstractmethod
    def hidden_params(self, model: nn.Module) -> list[tuple[nn.Parameter, int]]:
        """Parameters outside the attention/FFN sub-layers that have a hidden axis, with that axis.

        Tied parameters may appear more than once (callers de-duplicate by identity).
        """
        ...

    def needs_self_attention(self, stack: Stack, index: int) -> bool:
        """True when this self-attention may lose heads but never all of them.

        Decoder layer 0's self-attention fills the KV-cache slot that ``generate`` reads the
        decoded length from (both families), and T5's block 0 computes the relative-position
        bias every later block reuses. Such a sub-layer gets no whole-sub-layer mask and keeps at
        least one head.
        """
        return index == 0 and stack == "decoder"

    # ------------------------------------------------------------------ derived helpers
    def attentions(
        self, model: nn.Module, stack: Stack, kind: AttnKind
    ) -> list[AttentionRef | None]:
        return [
            self.attention(layer, stack, i, kind)
            for i, layer in enumerate(self.layers(model, stack))
        ]

    def ffns(self, model: nn.Module, stack: Stack) -> list[FFNRef | None]:
        return [self.ffn(layer, stack, i) for i, layer in enumerate(self.layers(model, stack))]

    def sublayers(self, model: nn.Module):
        """(stack, kind, index, layer, ref) for every attention ("self"/"cross") and FFN ("ffn")
        sub-layer that exists, encoder first, in layer order."""
        for stack in ("encoder", "decoder"):
            for i, layer in enumerate(self.layers(model, stack)):
                for kind in ("self", "cross"):
                    ref = self.attention(layer, stack, i, kind)
                    if ref is not None:
                        yield stack, kind, i, layer, ref
                ffn = self.ffn(layer, stack, i)
                if ffn is not None:
                    yield stack, "ffn", i, layer, ffn

    def residual_writes(self, model: nn.Module) -> list[nn.Module]:
        """Every module whose output is written into the residual stream: the embedding writes
        and each attention / FFN output projection (what the hidden-dimension gate scales)."""
        return [
            *self.embedding_writes(model),
            *(
                ref.output if kind == "ffn" else ref.o
                for _, kind, _, _, ref in self.sublayers(model)
            ),
        ]


class T5Adapter(Adapter):
    """T5, T5 v1.1 / Flan-T5 (gated FFN ``wi_0``/``wi_1``) and mT5: pre-norm, no biases."""

    family = "t5"
    model_types = ("t5", "mt5")

    def layers(self, model, stack):
        return getattr(model, stack).block

    def attention(self, layer, stack, index, kind):
        if kind == "cross" and stack == "encoder":
            return None
        sub = layer.layer[0 if kind == "self" else 1]
        module = getattr(sub, "SelfAttention" if kind == "self" else "EncDecAttention", None)
        if module is None:
            return None
        return AttentionRef(
            stack,
            index,
            kind,
            module,
            module.q,
            module.k,
            module.v,
            module.o,
            module.key_value_proj_dim,
        )

    def ffn(self, layer, stack, index):
        dense = getattr(layer.layer[-1], "DenseReluDense", None)
        if dense is None:
            return None
        inputs = (dense.wi_0, dense.wi_1) if hasattr(dense, "wi_0") else (dense.wi,)
        return FFNRef(stack, index, inputs, dense.wo)

    def set_decoder_depth(self, model, k):
        model.config.num_decoder_layers = k
        model.decoder.config.num_layers = k
        model.decoder.config.num_decoder_layers = k

    def move_position_table(self, old_first, new_first):
        old = old_first.layer[0].SelfAttention
        new = new_first.layer[0].SelfAttention
        if getattr(new, "has_relative_attention_bias", False):
            return
        new.relative_attention_bias = old.relative_attention_bias
        new.has_relative_attention_bias = True

    def needs_self_attention(self, stack, index):
        return index == 0

    def embedding_writes(self, model):
        return [model.encoder.embed_tokens, model.decoder.embed_tokens]

    def rms_norms(self, model):
        norms = []
        for stack in ("encoder", "decoder"):
            for block in self.layers(model, stack):
                norms += [sub.layer_norm for sub in block.layer if hasattr(sub, "layer_norm")]
            norms.append(getattr(model, stack).final_layer_norm)
        return norms

    def sublayer_norm(self, layer, stack, index, kind):
        sub = layer.layer[{"self": 0, "cross": 1, "ffn": -1}[kind]]
        return getattr(sub, "layer_norm", None)

    def output_norm(self, model):
        return model.decoder.final_layer_norm

    def hidden_params(self, model):
        params = [(model.shared.weight, 1), (model.lm_head.weight, 1)]
        for stack in ("encoder", "decoder"):
            params += [
                (getattr(model, stack).embed_tokens.weight, 1),
                (getattr(model, stack).final_layer_norm.weight, 0),
            ]
        return params


class BartAdapter(Adapter):
    """BART: post-norm, biases everywhere, FFN projections directly on the layer."""

    family = "bart"
    model_types = ("bart",)

    def layers(self, model, stack):
        return getattr(model.model, stack).layers

    def attention(self, layer, stack, index, kind):
        name = "self_attn" if kind == "self" else "encoder_attn"
        module = getattr(layer, name, None)
        if module is None or not hasattr(module, "q_proj"):
            return None
        return AttentionRef(
            stack,
            index,
            kind,
            module,
            module.q_proj,
            module.k_proj,
            module.v_proj,
            module.out_proj,
            module.head_dim,
        )

    def ffn(self, layer, stack, index):
        return FFNRef(stack, index, (layer.fc1,), layer.fc2)

    def set_decoder_depth(self, model, k):
        model.config.decoder_layers = k
        model.model.decoder.config.decoder_layers = k

    def embedding_writes(self, model):
        # gate after layernorm_embedding: token + position embeddings are normalised first
        return [model.model.encoder.layernorm_embedding, model.model.decoder.layernorm_embedding]

    def hidden_norms(self, model):
        return [m for m in model.modules() if isinstance(m, nn.LayerNorm)]

    def hidden_params(self, model):
        params = [(model.model.shared.weight, 1), (model.lm_head.weight, 1)]
        for stack in ("encoder", "decoder"):
            part = getattr(model.model, stack)
            params += [(part.embed_tokens.weight, 1), (part.embed_positions.weight, 1)]
        for norm in self.hidden_norms(model):
            params += [(p, 0) for p in (norm.weight, norm.bias) if p is not None]
        return params


_ADAPTERS: tuple[Adapter, ...] = (T5Adapter(), BartAdapter())


def supported_model_types() -> list[str]:
    return [t for a in _ADAPTERS for t in a.model_types]


def get_adapter(model_or_type) -> Adapter:
    """The adapter for a model (or a ``model_type`` string); ModelError for anything else."""
    model_type = (
        model_or_type if isinstance(model_or_type, str) else model_or_type.config.model_type
    )
    for adapter in _ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise ModelError(
        f"model type {model_type!r} is not supported for pruning; supported model types: "
        f"{', '.join(supported_model_types())}. "
        "Use a T5/mT5/Flan-T5 or BART checkpoint as model.base."
    )
