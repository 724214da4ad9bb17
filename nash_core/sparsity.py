"""Exact size accounting and the Lagrangian sparsity constraint (method.md section 3).

Sizes are read from the modules (via the adapter), never assumed: a head costs its q/k/v rows,
its o columns and its q/k/v biases, whatever d_kv is; a gated FFN unit costs three d_model
vectors. Parameters that belong to a sub-layer as a whole (BART's output biases) count as long
as the sub-layer survives. With CoFi's hidden-dimension mask every d_model-sized factor is
multiplied by the number of open dimensions. The same accounting applied to a materialised
model (no masks) gives its real prunable parameter count, which must equal the deterministic
masks' expected size; :meth:`SizeModel.total` also covers embeddings, LM head and norms and
equals the materialised model's whole parameter count. :func:`zero_stats` counts the exact
zeros of a saved model's weights (weight-level sparsity, any method).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from nash_core.adapters import Stack, get_adapter
from nash_core.io import atomic_write_json
from nash_core.masks import HIDDEN, GroupSpec, MaskSet
from nash_core.train import TrainHook

STACKS: tuple[Stack, ...] = ("encoder", "decoder")


@dataclass(frozen=True)
class Sublayer:
    """One prunable sub-layer, its parameters split by what they scale with.

    A unit (head / FFN unit) costs ``per_unit_h`` parameters per hidden dimension (its q/k/v rows
    and o column, or its FFN rows and column) plus ``per_unit_c`` that do not depend on the
    width (q/k/v or input biases). The sub-layer as a whole owns ``fixed_h`` per hidden dimension
    (BART's output bias); ``norm_h`` per hidden dimension is a norm that exists
    only while the sub-layer keeps a unit (T5's pre-norm goes with a dropped sub-layer).
    ``hidden`` is the model's current width.
    """

    stack: Stack
    kind: str  # "self", "cross" or "ffn"
    layer: int
    units: int
    per_unit_h: int
    per_unit_c: int
    fixed_h: int
    norm_h: int
    hidden: int

    @property
    def per_unit(self) -> int:
        return self.per_unit_h * self.hidden + self.per_unit_c

    @property
    def fixed(self) -> int:
        return self.fixed_h * self.hidden

    @property
    def size(self) -> int:
        """Prunable parameters (projections and their biases; norms excluded)."""
        return self.units * self.per_unit + self.fixed


def _exact_div(total: int, by: int, what: str) -> int:
    if by == 0:
        return 0
    if total % by:
        raise ValueError(f"{what}: {total} parameters do not split evenly into {by} parts")
    return total // by


def sublayers(model: nn.Module) -> list[Sublayer]:
    """Every attention and FFN sub-layer that still exists in ``model``, with its unit costs."""
    adapter = get_adapter(model)
    hidden = adapter.hidden_size(model)
    return [
        _sublayer(
            adapter,
            layer,
            stack,
            kind,
            i,
            ref.units if kind == "ffn" else ref.num_heads,
            ref,
            hidden,
        )
        for stack, kind, i, layer, ref in adapter.sublayers(model)
    ]


def _sublayer(adapter, layer, stack, kind, i, units, ref, hidden) -> Sublayer:
    """``ref`` (an AttentionRef or FFNRef) counts the parameters; here they are split by width."""
    what = f"{stack} layer {i} {kind}"
    norm = adapter.sublayer_norm(layer, stack, i, kind)
    return Sublayer(
        stack,
        kind,
        i,
        units,
        per_unit_h=_exact_div(ref.weight_params, units * hidden, what),
        per_unit_c=_exact_div(ref.unit_bias_params, units, what),
        fixed_h=_exact_div(ref.fixed_params, hidden, what),
        norm_h=_exact_div(sum(p.numel() for p in norm.parameters()), hidden, what)
        if norm is not None
        else 0,
        hidden=hidden,
    )


def count_prunable(model: nn.Module, stacks: tuple[Stack, ...] = STACKS) -> int:
    """Real number of prunable parameters (attention + FFN projections) in the given stacks."""
    return sum(s.size for s in sublayers(model) if s.stack in stacks)


def count_parameters(model: nn.Module) -> int:
    """Every parameter of ``model``, tied ones once (what materialisation must match exactly)."""
    return sum(p.numel() for p in model.parameters())


class SizeModel:
    """Expected size of the student under its masks, differentiable in the masks' log_alpha.

    With a hidden-dimension mask every d_model-sized factor is multiplied by the number of
    open dimensions (expected: sum of P(nonzero); materialised: the kept count), as in CoFi's
    expected-size formula; products of expectations are the smooth surrogate the Lagrangian uses.
    """

    def __init__(self, model: nn.Module, masks: MaskSet):
        adapter = get_adapter(model)
        self.entries = sublayers(model)
        self.width = adapter.hidden_size(model)
        self.rows: dict[tuple[str, str, int], tuple[str, int]] = {}
        self.hidden_group: str | None = None
        for spec in masks.specs:
            if spec.name == HIDDEN:
                self.hidden_group = spec.name
                continue
            for row, layer in enumerate(spec.layers):
                self.rows[(spec.stack, f"{spec.sublayer}:{spec.target}", layer)] = (spec.name, row)
        # everything outside the sub-layers: the width-dependent part (embeddings, LM head, norms,
        # BART positions) and the rest (T5 relative-position tables)
        seen, rest_h = set(), 0
        for p, axis in adapter.hidden_params(model):
            if id(p) not in seen:
                seen.add(id(p))
                rest_h += _exact_div(p.numel(), self.width, "embedding/norm parameters")
        in_sublayers = sum(e.size + e.norm_h * e.hidden for e in self.entries)
        self.rest_h = rest_h
        self.rest_c = count_parameters(model) - in_sublayers - rest_h * self.width

    def prunable(self, stacks: tuple[Stack, ...]) -> int:
        return sum(e.size for e in self.entries if e.stack in stacks)

    def hidden(self, values: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """Open hidden dimensions (expected or kept); the full width without a hidden mask."""
        if self.hidden_group is None:
            return float(self.width)
        return values[self.hidden_group][0].sum()

    def size(self, values: dict[str, torch.Tensor], stacks: tuple[Stack, ...]) -> torch.Tensor:
        """Sum over sub-layers of
        gate * (kept units * (per_unit_h * h + per_unit_c) + fixed_h * h).

        ``values`` maps group names to per-unit P(nonzero) (expected size) or to 0/1 indicators
        of the deterministic mask (the materialised size); ``h`` is the open hidden width.
        """
        return self._size(values, stacks, norms=False)

    def total(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """All parameters of the model under ``values``: sub-layers, their norms, embeddings, LM
        head, other norms and tables. With 0/1 indicators this is the materialised model's
        :func:`count_parameters` exactly."""
        h = self.hidden(values)
        return self._size(values, STACKS, norms=True) + self.rest_h * h + self.rest_c

    def _size(self, values, stacks, norms: bool) -> torch.Tensor:
        first = next(iter(values.values())) if values else torch.zeros(())
        total = torch.zeros((), device=first.device, dtype=first.dtype)
        h = self.hidden(values)
        for e in self.entries:
            if e.stack not in stacks:
                continue
            unit_target = "heads" if e.kind in ("self", "cross") else "units"
            units = self._lookup(values, e, unit_target)
            kept_units = units.sum() if units is not None else float(e.units)
            gate = self._lookup(values, e, "layer")
            sub = kept_units * (e.per_unit_h * h + e.per_unit_c) + e.fixed_h * h
            if norms and e.norm_h:
                # the norm exists while at least one unit does: P(any unit) = 1 - prod(1 - p)
                alive = 1.0 - torch.prod(1.0 - units) if units is not None else 1.0
                sub = sub + alive * e.norm_h * h
            total = total + (sub * gate[0] if gate is not None else sub)
        return total

    def sparsity(self, values: dict[str, torch.Tensor], stacks: tuple[Stack, ...]) -> torch.Tensor:
        return 1.0 - self.size(values, stacks) / self.prunable(stacks)

    def _lookup(self, values, e: Sublayer, target: str):
        hit = self.rows.get((e.stack, f"{e.kind}:{target}", e.layer))
        return None if hit is None else values[hit[0]][hit[1]]


def hard_values(masks: MaskSet) -> dict[str, torch.Tensor]:
    """0/1 survival indicators of the deterministic masks (what materialisation keeps).

    float64, so that sizes computed from them are exact integers even for billions of parameters.
    """
    return {name: (z > 0).double() for name, z in masks.deterministic().items()}


# ---------------------------------------------------------------------- Lagrangian
def ramp(step: int, start: float, end: float, warmup_steps: int) -> float:
    """Target at ``step``: linear from ``start`` to ``end`` over ``warmup_steps``, then ``end``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


@dataclass(frozen=True)
class Constraint:
    """A sparsity target over some stacks (NASH: the encoder; CoFi: the whole model)."""

    name: str
    stacks: tuple[Stack, ...]
    start: float
    end: float


class Lagrangian(nn.Module):
    """l1 * (s - t) + l2 * (s - t)^2 with its own (l1, l2) per constraint, both starting at 0.

    The multipliers are trained by gradient ASCENT (their optimizer group has maximize=True):
    the violation then grows the penalty until the masks meet the target.
    """

    def __init__(self, names: list[str]):
        super().__init__()
        self.l1 = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in names})
        self.l2 = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in names})

    def forward(self, name: str, s: torch.Tensor, t: float) -> torch.Tensor:
        gap = s - t
        return self.l1[name] * gap + self.l2[name] * gap * gap


class SparsityHook(TrainHook):
    """TrainHook: trains the masks and multipliers and keeps only on-target best checkpoints."""

    def __init__(
        self,
        model: nn.Module,
        masks: MaskSet,
        constraints: list[Constraint],
        *,
        warmup_steps: int,
        mask_lr: float,
        lagrangian_lr: float,
        epsilon: float,
    ):
        self.masks = masks
        self.sizes = SizeModel(model, masks)
        self.constraints = constraints
        self.lagrangian = Lagrangian([c.name for c in constraints]).to(
            next(masks.parameters()).device
        )
        self.warmup_steps = warmup_steps
        self.mask_lr, self.lagrangian_lr, self.epsilon = mask_lr, lagrangian_lr, epsilon

    def param_groups(self, model: nn.Module) -> list[dict]:
        return [
            # constant learning rates (not the model's warm-up/decay), as in the reference
            {
                "params": list(self.masks.parameters()),
                "lr": self.mask_lr,
                "weight_decay": 0.0,
                "scheduled": False,
                "name": "masks",
            },
            {
                "params": list(self.lagrangian.parameters()),
                "lr": self.lagrangian_lr,
                "weight_decay": 0.0,
                "maximize": True,
                "scheduled": False,
                "name": "lagrangian",
            },
        ]

    def extra_loss(self, model, batch, outputs, step: int):
        probs = self.masks.probs()
        loss = torch.zeros((), device=next(self.masks.parameters()).device)
        metrics = {}
        for c in self.constraints:
            s = self.sizes.sparsity(probs, c.stacks)
            t = ramp(step, c.start, c.end, self.warmup_steps)
            loss = loss + self.lagrangian(c.name, s, t)
            metrics.update(
                {
                    f"sparsity_expected_{c.name}": s.detach(),
                    f"sparsity_target_{c.name}": t,
                    # clones: the multipliers change in place at the optimizer step
                    f"lambda1_{c.name}": self.lagrangian.l1[c.name].detach().clone(),
                    f"lambda2_{c.name}": self.lagrangian.l2[c.name].detach().clone(),
                }
            )
        metrics["lagrangian_loss"] = loss.detach()
        return loss, metrics

    def after_step(self, step: int) -> None:
        self.masks.clamp_()  # also drops the masks' cached eval mask
        self.masks.resample()

    def eval_metrics(self) -> dict:
        with torch.no_grad():
            probs, hard = self.masks.probs(), hard_values(self.masks)
            out = {}
            for c in self.constraints:
                out[f"sparsity_expected_{c.name}"] = float(self.sizes.sparsity(probs, c.stacks))
                out[f"sparsity_hard_{c.name}"] = float(self.sizes.sparsity(hard, c.stacks))
                out[f"sparsity_target_{c.name}"] = c.end
            if self.sizes.hidden_group is not None:
                out["hidden_kept"] = float(self.sizes.hidden(hard))
                out["hidden_expected"] = float(self.sizes.hidden(probs))
            return out

    def is_eligible(self, metrics: dict) -> bool:
        """Only checkpoints whose expected sparsity is within epsilon of the FINAL target."""
        return all(
            abs(metrics[f"sparsity_expected_{c.name}"] - c.end) <= self.epsilon
            for c in self.constraints
        )

    def state_dict(self) -> dict:
        return {
            "masks": self.masks.state_dict(),
            "lagrangian": self.lagrangian.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.masks.load_state_dict(state["masks"])
        # a "step" entry (written by older checkpoints) is not read
        self.lagrangian.load_state_dict(state["lagrangian"])

    def save_best(self, out_dir: str | Path) -> None:
        save_pruning_state(out_dir, self.masks, self.lagrangian, self.eval_metrics())


MASKS_FILE = "nash_masks.pt"


def save_pruning_state(
    out_dir: str | Path, masks: MaskSet, lagrangian: Lagrangian, metrics: dict
) -> None:
    """Masks (specs + log_alpha), multipliers and the sparsity they give, next to the weights."""
    out = Path(out_dir)
    torch.save(
        {
            "specs": [asdict(s) for s in masks.specs],
            "masks": masks.state_dict(),
            "lagrangian": lagrangian.state_dict(),
        },
        out / MASKS_FILE,
    )
    atomic_write_json(out / "nash_sparsity.json", metrics)


def load_masks(stage_dir: str | Path) -> tuple[MaskSet | None, dict | None]:
    """The trained MaskSet of a stage directory and its :func:`load_pruning_state` dict, or
    (None, None) when the directory has no masks (sft)."""
    if not (Path(stage_dir) / MASKS_FILE).is_file():
        return None, None
    state = load_pruning_state(stage_dir)
    masks = MaskSet(state["specs"])
    masks.load_state_dict(state["masks"])
    return masks, state


def load_pruning_state(stage_dir: str | Path) -> dict:
    """The dict written by :func:`save_pruning_state` (specs as GroupSpec objects)."""
    state = torch.load(Path(stage_dir) / MASKS_FILE, map_location="cpu", weights_only=True)
    state["specs"] = [
        GroupSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
        for s in state["specs"]
    ]
    return state


# --------------------------------------------------------------------------- weight zeros
def zero_stats(model_dir: str | Path) -> dict[str, float]:
    """Non-zero parameter count and zero fraction of a saved model's weights (safetensors).

    ``params_nonzero``: non-zero entries over every tensor saved (a tied tensor once);
    ``weight_zero_fraction``: exact zeros among the 2-D weights of the encoder and decoder
    stacks (the linear projections; embeddings, norms and position tables excluded).
    """
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    nonzero, zeros, linear = 0, 0, 0
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_tensor(name)
                nz = int(torch.count_nonzero(t))
                nonzero += nz
                low = name.lower()
                if (
                    t.dim() == 2
                    and ("encoder." in low or "decoder." in low)
                    and not any(x in low for x in ("embed", "relative_attention_bias", "norm"))
                ):
                    linear += t.numel()
                    zeros += t.numel() - nz
    return {
        "params_nonzero": float(nonzero),
        "weight_zero_fraction": zeros / linear if linear else 0.0,
    }
