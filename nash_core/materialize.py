"""Turn a masked student into a physically smaller model that computes exactly the same thing.

Steps (method.md section 5.4): take the deterministic masks; fold every surviving gate value into
the output projection it scaled (head gates and FFN unit gates into the columns of ``o``/``wo``,
whole-sub-layer gates into the whole projection and its bias); slice q/k/v rows and o columns
per kept head and the FFN input rows / output columns per kept unit; drop sub-layers with
nothing left. The module surgery itself is ``modeling_nash.restructure``, the code the export
ships, so the in-process model and a reloaded export are built identically.
"""

from __future__ import annotations

import torch
from torch import nn

from nash_core.adapters import Adapter, get_adapter
from nash_core.export_modeling.modeling_nash import restructure
from nash_core.masks import MaskSet
from nash_core.sparsity import STACKS


def materialize(model: nn.Module, masks: MaskSet | None) -> nn.Module:
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
        model.load_state_dict({k: state[k] for k in wanted}, strict=True)
    model.config.nash = {"family": adapter.family, "shapes": shapes}
    return model


class _Plan:
    """Per sub-layer gates of one model, looked up by (stack, sub-layer, target, layer)."""

    def __init__(self, adapter: Adapter, model: nn.Module, masks: MaskSet | None, gates: dict):
        self.adapter, self.model = adapter, model
        self.gate: dict[tuple, torch.Tensor] = {}
        for spec in (masks.specs if masks is not None else []):
            for row, layer in enumerate(spec.layers):
                self.gate[(spec.stack, spec.sublayer, spec.target, layer)] = gates[spec.name][row]

    def _refs(self):
        """(stack, sub-layer kind, layer, ref) for every attention and FFN of the model."""
        for stack in STACKS:
            for i, layer in enumerate(self.adapter.layers(self.model, stack)):
                for kind in ("self", "cross"):
                    ref = self.adapter.attention(layer, stack, i, kind)
                    if ref is not None:
                        yield stack, kind, i, ref
                yield stack, "ffn", i, self.adapter.ffn(layer, stack, i)

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
                rows = torch.tensor([h * ref.head_dim + d for h in heads for d in range(ref.head_dim)],
                                    dtype=torch.long)
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
    state[f"{names[linear]}.weight"] = linear.weight.index_select(1, cols.to(linear.weight.device)).clone()
