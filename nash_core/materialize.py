"""Turn a masked student into a physically smaller model that computes exactly the same thing.

Steps (method.md section 5.4): take the deterministic masks; fold every surviving gate value into
the output projection it scaled (head gates and FFN unit gates into the columns of ``o``/``wo``,
whole-sub-layer gates into the whole projection and its bias); slice q/k/v rows and o columns
per kept head and the FFN input rows / output columns per kept unit; drop sub-layers with
nothing left. The module surgery itself is ``modeling_nash.restructure``, the code the export
ships, so the in-process model and a reloaded export are built identically.

CoFi's hidden-dimension mask (one gate z per d_model dimension, see masks.py) is folded into the
residual-stream writes it scaled -- the rows of every ``o``/``wo``/``out_proj``/``fc2`` (and
bias), T5's token-embedding columns, BART's ``layernorm_embedding`` weight and bias -- and then
every d_model-sized axis is sliced to the kept dimensions (embeddings, positions, norms, q/k/v
and FFN input columns, output-projection rows, LM head). Two exact corrections keep the logits
identical:

- T5's RMS norm divides by sqrt(mean of squares): over the full width d the masked model's
  closed dimensions are zeros, so mean = S/d; over the kept width k it is S/k. Each norm weight
  is multiplied by c = sqrt(d/k) and its epsilon set to eps * d/k (``modeling_nash`` does the
  latter from the recorded shapes): c / sqrt(S/k + eps*d/k) = 1 / sqrt(S/d + eps).
  ``config.d_model`` stays the teacher's width, so T5's d_model**-0.5 output scale and BART's
  head size and embedding scale are unchanged; the real width is ``shapes["hidden"]["kept"]``.
- T5 with a tied LM head: folding z into the shared embedding would also scale the LM head, so
  the decoder's final norm weight (whose output only feeds the LM head) is divided by z on the
  kept dimensions. The tie is kept (no extra vocab x d parameters; transformers 5 ties T5's LM
  head always, its T5Config forces tie_word_embeddings=True); an untied LM head is just sliced.
  BART's z goes into ``layernorm_embedding``, so its tied embedding is only sliced.
  (BART's LayerNorm over the kept dimensions, which masks.py computes during training, is the
  plain sliced LayerNorm of the materialised model.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nash_core.adapters import Adapter, get_adapter
from nash_core.export_modeling.modeling_nash import restructure
from nash_core.masks import HIDDEN, MaskSet
from nash_core.sparsity import STACKS


def materialize_masks(model: nn.Module, masks: MaskSet | None) -> nn.Module:
    """Fold and slice ``masks`` into ``model`` (in place; hooks are removed) and return it.

    Records the per-layer shapes in ``model.config.nash = {"family", "shapes"}``.
    """
    adapter = get_adapter(model)
    gates = {}
    if masks is not None:
        masks.detach()
        gates = masks.deterministic()
    plan = _Plan(adapter, model, masks, gates)
    with torch.no_grad():
        plan.fold()
        shapes = plan.shapes()
        state = plan.sliced_state(shapes)
        restructure(model, shapes)
        wanted = model.state_dict()
        model.load_state_dict(
            {k: plan.slice_hidden(k, state[k], wanted[k].shape) for k in wanted}, strict=True
        )
    model.config.nash = {"family": adapter.family, "shapes": shapes}
    return model


class _Plan:
    """Per sub-layer gates of one model, looked up by (stack, sub-layer, target, layer)."""

    def __init__(self, adapter: Adapter, model: nn.Module, masks: MaskSet | None, gates: dict):
        self.adapter, self.model = adapter, model
        self.gate: dict[tuple, torch.Tensor] = {}
        self.width = adapter.hidden_size(model)
        self.hidden = gates[HIDDEN][0] if HIDDEN in gates else None
        self.hidden_kept = (
            torch.nonzero(self.hidden).flatten()
            if self.hidden is not None
            else torch.arange(self.width)
        )
        for spec in masks.specs if masks is not None else []:
            if spec.name == HIDDEN:
                continue
            for row, layer in enumerate(spec.layers):
                self.gate[(spec.stack, spec.sublayer, spec.target, layer)] = gates[spec.name][row]

    def _refs(self):
        """(stack, sub-layer kind, layer, ref) for every attention and FFN of the model."""
        for stack, kind, i, _, ref in self.adapter.sublayers(self.model):
            yield stack, kind, i, ref

    def fold(self) -> None:
        for stack, kind, i, ref in self._refs():
            out = ref.output if kind == "ffn" else ref.o
            units = self.gate.get((stack, kind, "units" if kind == "ffn" else "heads", i))
            if units is not None:
                size = 1 if kind == "ffn" else ref.head_dim
                out.weight.mul_(units.repeat_interleave(size).to(out.weight))
            layer_gate = self.gate.get((stack, kind, "layer", i))
            if layer_gate is not None:
                out.weight.mul_(layer_gate.to(out.weight))
                if out.bias is not None:
                    out.bias.mul_(layer_gate.to(out.bias))
        if self.hidden is not None:
            self.fold_hidden()

    def fold_hidden(self) -> None:
        """Fold the hidden gate into the residual writes; T5 norm and tied-head corrections."""
        z = self.hidden
        folded: set[int] = set()

        def scale(param, axis: int, factor) -> None:
            if param is None or id(param) in folded:
                return
            folded.add(id(param))
            shape = [1] * param.dim()
            shape[axis] = -1
            param.mul_(factor.to(param).view(shape))

        for module in self.adapter.residual_writes(self.model):
            if isinstance(module, nn.Embedding):  # T5: embedding columns
                scale(module.weight, 1, z)
            else:  # output projections (rows) and BART's layernorm_embedding
                scale(module.weight, 0, z)
                scale(getattr(module, "bias", None), 0, z)
        embedding = self.model.get_input_embeddings().weight
        head = self.model.get_output_embeddings()
        if id(embedding) in folded and head is not None and head.weight is embedding:
            kept = self.hidden_kept
            weight = self.adapter.output_norm(self.model).weight
            weight[kept] = weight[kept] / z[kept].to(weight)
        k = len(self.hidden_kept)
        for norm in self.adapter.rms_norms(self.model):
            norm.weight.mul_(math.sqrt(self.width / k))

    def slice_hidden(self, key: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """``tensor`` with every axis that restructure shrank from d_model to the kept width
        sliced."""
        if tensor.shape == shape:
            return tensor
        k = len(self.hidden_kept)
        if tensor.dim() != len(shape):
            raise ValueError(
                f"materialise: {key} has shape {tuple(tensor.shape)}, expected {tuple(shape)}"
            )
        for axis, (have, want) in enumerate(zip(tensor.shape, shape)):
            if have == want:
                continue
            if have != self.width or want != k:
                raise ValueError(
                    f"materialise: {key} has shape {tuple(tensor.shape)}, expected {tuple(shape)}"
                )
            tensor = tensor.index_select(axis, self.hidden_kept.to(tensor.device))
        return tensor.clone()

    def kept(self, stack, kind, i, n_units):
        """Kept unit indices, or None when a whole-sub-layer gate is closed."""
        layer_gate = self.gate.get((stack, kind, "layer", i))
        if layer_gate is not None and float(layer_gate[0]) == 0.0:
            return None
        units = self.gate.get((stack, kind, "units" if kind == "ffn" else "heads", i))
        if units is None:
            return list(range(n_units))
        return [int(j) for j in torch.nonzero(units).flatten()]

    def shapes(self) -> dict:
        shapes = {"family": self.adapter.family, "encoder": [], "decoder": []}
        if self.hidden is not None:
            shapes["hidden"] = {"kept": len(self.hidden_kept), "full": self.width}
        for stack in STACKS:
            shapes[stack] = [{} for _ in self.adapter.layers(self.model, stack)]
        for stack, kind, i, ref in self._refs():
            if kind == "ffn":
                kept = self.kept(stack, kind, i, ref.units)
                shapes[stack][i]["ffn"] = None if kept is None else len(kept)
            else:
                shapes[stack][i][kind] = self.kept(stack, kind, i, ref.num_heads)
        return shapes

    def sliced_state(self, shapes: dict) -> dict[str, torch.Tensor]:
        """The current state dict with every projection cut down to its kept heads / units."""
        state = dict(self.model.state_dict())
        names = {m: n for n, m in self.model.named_modules()}
        for stack, kind, i, ref in self._refs():
            if kind == "ffn":
                rows = torch.tensor(self.kept(stack, kind, i, ref.units) or [], dtype=torch.long)
                _slice_rows(state, names, ref.inputs, rows)
                _slice_cols(state, names, ref.output, rows)
            else:
                heads = shapes[stack][i][kind] or []
                rows = torch.tensor(
                    [h * ref.head_dim + d for h in heads for d in range(ref.head_dim)],
                    dtype=torch.long,
                )
                _slice_rows(state, names, (ref.q, ref.k, ref.v), rows)
                _slice_cols(state, names, ref.o, rows)
        return state


def _slice_rows(state, names, linears, rows) -> None:
    for lin in linears:
        prefix = names[lin]
        state[f"{prefix}.weight"] = lin.weight.index_select(0, rows.to(lin.weight.device)).clone()
        if lin.bias is not None:
            state[f"{prefix}.bias"] = lin.bias.index_select(0, rows.to(lin.bias.device)).clone()


def _slice_cols(state, names, linear, cols) -> None:
    state[f"{names[linear]}.weight"] = linear.weight.index_select(
        1, cols.to(linear.weight.device)
    ).clone()
