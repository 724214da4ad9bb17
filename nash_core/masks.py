"""Hard-concrete L0 masks on heads, FFN units and whole sub-layers (method.md section 2).

The masks live OUTSIDE the model (so ``save_pretrained`` never sees them) and act on unmodified
Hugging Face modules through removable hooks:

- head gates: a forward pre-hook on the attention output projection (``o`` / ``out_proj``)
  views its input as (..., heads, head_dim) and scales each head; works with eager and SDPA
  because it runs after the attention kernel;
- FFN unit gates: a forward pre-hook on ``wo`` / ``fc2`` scales each intermediate unit;
- whole-sub-layer gates (CoFi): a forward hook scales the output of that same projection;
- the hidden-dimension gate (CoFi; one gate per d_model dimension, shared by the whole model):
  forward hooks scale every write into the residual stream -- the embedding output (T5: the
  token embedding; BART: after ``layernorm_embedding``) and the output of every attention/FFN
  output projection -- so a closed dimension is exactly zero in the residual stream. T5's RMS
  norm keeps zeros at zero. BART's LayerNorm subtracts the mean and adds a bias, so a forward
  hook on every ``nn.LayerNorm`` recomputes it over the open dimensions only and writes zeros
  elsewhere (as CoFi's own code does); in training "open" means non-zero in the current sample.
  Materialisation then slices every d_model-sized axis (see materialize.py).

Training mode (taken from the hooked module, i.e. from ``model.train()``) uses a stochastic
sample; the uniform noise is drawn once per optimizer step (:meth:`MaskSet.resample`) and the
gate is recomputed from it at every forward, so every micro-batch of an accumulated step sees the
same sample while gradients still reach ``log_alpha``. Eval mode uses the deterministic mask.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nash_core.adapters import Adapter, AttnKind, Stack, get_adapter
from nash_core.errors import ModelError

BETA = 2.0 / 3.0
GAMMA, ZETA = -0.1, 1.1
LOG_ALPHA_MIN, LOG_ALPHA_MAX = math.log(0.01), math.log(100.0)
INIT_STD = 0.01
_EPS = 1e-6
_SURVIVOR_SHARPNESS = 0.8  # reference: survivors keep sigmoid(log_alpha / beta * 0.8)

Target = Literal["heads", "units", "layer"]
HIDDEN = "model_hidden_units"  # name of the hidden-dimension group (stack "model", one row)


@dataclass(frozen=True)
class GroupSpec:
    """One mask group: a gate per unit for each of some layers of one kind of sub-layer.

    ``sublayer`` is "self" / "cross" (attention) or "ffn"; ``target`` says whether the gates
    act on heads, FFN units, or the whole sub-layer (one unit per row). ``layers[r]`` is the
    layer index of row r; ``min_keep[r]`` units of that row always survive the deterministic mask.
    """

    stack: Literal["encoder", "decoder", "model"]
    sublayer: Literal["self", "cross", "ffn", "hidden"]
    target: Target
    layers: tuple[int, ...]
    units: int
    min_keep: tuple[int, ...]
    init_mean: float

    @property
    def name(self) -> str:
        return f"{self.stack}_{self.sublayer}_{self.target}"


class HardConcrete(nn.Module):
    """log_alpha (rows x units) with the per-step noise that defines the current sample."""

    def __init__(self, spec: GroupSpec):
        super().__init__()
        self.spec = spec
        shape = (len(spec.layers), spec.units)
        self.log_alpha = nn.Parameter(torch.normal(spec.init_mean, INIT_STD, shape))
        self.register_buffer("noise", torch.full(shape, 0.5))
        # the eval mask, built on first eval use. It changes only when log_alpha does, and what
        # changes log_alpha says so: clamp_ (after every optimizer step) and load_state_dict call
        # invalidate(); code that writes log_alpha by hand calls it too.
        self._eval_mask: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(_invalidate_after_load)
        self.resample()

    def invalidate(self) -> None:
        """Forget the cached eval mask (log_alpha changed)."""
        self._eval_mask = None

    def resample(self) -> None:
        with torch.no_grad():
            self.noise.uniform_(_EPS, 1 - _EPS)

    def clamp_(self) -> None:
        with torch.no_grad():
            self.log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)
        self.invalidate()

    def prob_nonzero(self) -> torch.Tensor:
        """P(gate != 0) per unit, differentiable in log_alpha."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

    def sample(self, row: int) -> torch.Tensor:
        u = self.noise[row]
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha[row]) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    @torch.no_grad()
    def deterministic(self) -> torch.Tensor:
        """Eval mask: per row, the n0 = round(N - sum p) lowest-log_alpha units are zeroed.

        Survivors keep the reference's soft value; materialisation folds it into the weights.
        """
        la = self.log_alpha.detach()
        soft = torch.sigmoid(la / BETA * _SURVIVOR_SHARPNESS)
        n = la.shape[1]
        n_zero = torch.round(n - self.prob_nonzero().detach().sum(dim=1)).long()
        out = soft.clone()
        for row in range(la.shape[0]):
            k = min(int(n_zero[row]), n - self.spec.min_keep[row])
            if k > 0:
                out[row, torch.argsort(la[row])[:k]] = 0.0
        return out

    def gate(self, row: int, training: bool) -> torch.Tensor:
        if training:
            return self.sample(row)
        mask = self._eval_mask
        if mask is None or mask.device != self.log_alpha.device:
            mask = self._eval_mask = self.deterministic()
        return mask[row]


def _invalidate_after_load(module: HardConcrete, incompatible_keys) -> None:
    module.invalidate()


class MaskSet(nn.Module):
    """All mask groups of one student plus the hooks that apply them."""

    def __init__(self, specs: list[GroupSpec]):
        super().__init__()
        self.groups = nn.ModuleDict({s.name: HardConcrete(s) for s in specs})
        self._handles: list = []

    def __contains__(self, name: str) -> bool:
        return name in self.groups

    @property
    def specs(self) -> list[GroupSpec]:
        return [g.spec for g in self.groups.values()]

    def resample(self) -> None:
        for g in self.groups.values():
            g.resample()

    def clamp_(self) -> None:
        for g in self.groups.values():
            g.clamp_()

    def probs(self) -> dict[str, torch.Tensor]:
        return {name: g.prob_nonzero() for name, g in self.groups.items()}

    def deterministic(self) -> dict[str, torch.Tensor]:
        return {name: g.deterministic() for name, g in self.groups.items()}

    # ------------------------------------------------------------------ hooks
    def attach(self, model: nn.Module) -> MaskSet:
        """Register the gating hooks on ``model`` (call :meth:`detach` to remove them)."""
        self.detach()
        adapter = get_adapter(model)
        for group in self.groups.values():
            spec = group.spec
            if spec.sublayer == "hidden":
                self._attach_hidden(adapter, model, group)
                continue
            for row, layer in enumerate(spec.layers):
                proj, head_dim = _output_projection(adapter, model, spec, layer)
                if spec.target == "layer":
                    self._handles.append(proj.register_forward_hook(_scale_output(group, row)))
                else:
                    self._handles.append(
                        proj.register_forward_pre_hook(_scale_input(group, row, head_dim))
                    )
        return self

    def _attach_hidden(self, adapter: Adapter, model: nn.Module, group: HardConcrete) -> None:
        width = adapter.hidden_size(model)
        if group.spec.units != width:
            raise ModelError(
                f"the hidden-dimension mask has {group.spec.units} gates but the model's "
                f"width is {width}: masks are trained on an unpruned student"
            )
        # norm hooks first: on BART's layernorm_embedding the gate scales the recomputed output
        for norm in adapter.hidden_norms(model):
            self._handles.append(norm.register_forward_hook(_layer_norm_over_kept(group)))
        for module in adapter.residual_writes(model):
            self._handles.append(module.register_forward_hook(_scale_output(group, 0)))

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[MaskSet]:
        """``with masks.attached(model):`` -- the gating hooks for the block, removed on any exit
        (an exception or an interrupt included)."""
        self.attach(model)
        try:
            yield self
        finally:
            self.detach()

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _output_projection(adapter: Adapter, model: nn.Module, spec: GroupSpec, layer: int):
    """The projection a group's gates act on, and the head size when gating heads."""
    module = adapter.layers(model, spec.stack)[layer]
    if spec.sublayer == "ffn":
        return adapter.ffn(module, spec.stack, layer).output, 1
    ref = adapter.attention(module, spec.stack, layer, spec.sublayer)
    return ref.o, ref.head_dim


def _scale_input(group: HardConcrete, row: int, unit_size: int):
    def hook(module, args):
        x = args[0]
        z = group.gate(row, module.training).to(x.dtype)
        if unit_size > 1:
            z = z.repeat_interleave(unit_size)
        return (x * z, *args[1:])

    return hook


def _scale_output(group: HardConcrete, row: int):
    def hook(module, args, output):
        return output * group.gate(row, module.training).to(output.dtype)

    return hook


def _layer_norm_over_kept(group: HardConcrete):
    """LayerNorm over the open hidden dimensions only; zeros on the closed ones."""

    def hook(module, args, output):
        z = group.gate(0, module.training)
        kept = torch.nonzero(z).flatten()
        if kept.numel() == z.numel():
            return None
        x = args[0].index_select(-1, kept)
        weight = module.weight.index_select(0, kept) if module.weight is not None else None
        bias = module.bias.index_select(0, kept) if module.bias is not None else None
        normed = F.layer_norm(x, (kept.numel(),), weight, bias, module.eps)
        return output.new_zeros(output.shape).index_copy(-1, kept, normed.to(output.dtype))

    return hook


# ---------------------------------------------------------------------- plans
def plan_groups(
    model: nn.Module,
    *,
    stacks: tuple[Stack, ...] = ("encoder",),
    heads: bool = True,
    ffn_units: bool = True,
    sublayers: bool = False,
    cross: bool = False,
    hidden: bool = False,
    head_init: float = 10.0,
    ffn_init: float = 0.0,
    hidden_init: float = 10.0,
) -> list[GroupSpec]:
    """The mask groups for the chosen stacks.

    NASH: encoder heads + encoder FFN units. CoFi: heads, FFN units and whole sub-layers in both
    stacks, including decoder cross-attention, plus (``hidden``) one gate per d_model dimension
    shared by the whole model (at least one dimension always survives). Sub-layers that must
    stay alive (see :meth:`Adapter.needs_self_attention`) keep >= 1 head and get no
    whole-sub-layer gate.
    """
    adapter = get_adapter(model)
    specs: list[GroupSpec] = []
    for stack in stacks:
        n_layers = len(adapter.layers(model, stack))
        kinds: list[AttnKind] = ["self", "cross"] if (cross and stack == "decoder") else ["self"]
        for kind in kinds:
            refs = adapter.attentions(model, stack, kind)
            needed = [
                kind == "self" and adapter.needs_self_attention(stack, i) for i in range(n_layers)
            ]
            if heads:
                _uniform(refs, "num_heads")
                specs.append(
                    GroupSpec(
                        stack,
                        kind,
                        "heads",
                        tuple(range(n_layers)),
                        refs[0].num_heads,
                        tuple(int(n) for n in needed),
                        head_init,
                    )
                )
            if sublayers:
                rows = tuple(i for i in range(n_layers) if not needed[i])
                if rows:
                    specs.append(
                        GroupSpec(stack, kind, "layer", rows, 1, (0,) * len(rows), head_init)
                    )
        if ffn_units or sublayers:
            refs = adapter.ffns(model, stack)
            _uniform(refs, "units")
            rows = tuple(range(n_layers))
            if ffn_units:
                specs.append(
                    GroupSpec(stack, "ffn", "units", rows, refs[0].units, (0,) * n_layers, ffn_init)
                )
            if sublayers:
                specs.append(GroupSpec(stack, "ffn", "layer", rows, 1, (0,) * n_layers, head_init))
    if hidden:
        specs.append(
            GroupSpec(
                "model", "hidden", "units", (0,), adapter.hidden_size(model), (1,), hidden_init
            )
        )
    return specs


def _uniform(refs: list, attr: str) -> None:
    values = {getattr(r, attr) for r in refs}
    if len(values) != 1:
        raise ModelError(
            f"cannot attach masks: layers differ in {attr} ({sorted(values)}); "
            "masks are trained on an unpruned (teacher-shaped) student"
        )
