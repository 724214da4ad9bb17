"""Distillation from the fine-tuned teacher (method.md section 4), as a training hook.

Objective added to the task loss (the reference code computes these terms but never adds them;
we do, with configurable weights ``config.DistillConfig``):

- prediction layer: KL(teacher || student) of the temperature-softened token distributions,
  times T^2, averaged over target tokens whose label is not -100 (padding is never a target);
- hidden states: a learned linear map (initialised to the identity) takes student layer outputs
  to the teacher's space; for evenly spaced teacher layers, each is matched to the student layer
  with the smallest MSE under an order constraint (later teacher layers to strictly later student
  layers), in the encoder and in the decoder, for any depths (CoFi's matching); or, with
  ``layer_map: source``, each student layer to the teacher layer it was copied from (NASH keeps
  decoder layers [0, 5] of 6: student 0 <- teacher 0, student 1 <- teacher 5).

The teacher runs in eval mode under no_grad, once per training forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nash_core.config import DistillConfig
from nash_core.train import TrainHook


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Mean over non-padding target tokens of T^2 * KL(softmax(t/T) || softmax(s/T))."""
    keep = labels != -100
    s = F.log_softmax(student_logits[keep].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[keep].float() / temperature, dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="sum") / max(1, int(keep.sum()))
    return kl * temperature**2


def teacher_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spaced teacher layers to distil, one per student layer at most (12, 4 -> 2,5,8,11)."""
    m = min(n_teacher, n_student)
    return [(d + 1) * n_teacher // m - 1 for d in range(m)]


def align(distances: torch.Tensor) -> list[int]:
    """Student layer per teacher layer (rows) minimising distance, strictly increasing.

    Searched from the last teacher layer backwards: each picks the closest student layer below
    the previous pick while leaving one for every earlier teacher layer.
    """
    n_t, n_s = distances.shape
    picks, upper = [], n_s
    for row in range(n_t - 1, -1, -1):
        lo = row  # leave student layers 0..row-1 for the earlier teacher layers
        candidates = distances[row, lo:upper]
        pick = lo + int(torch.argmin(candidates))
        picks.append(pick)
        upper = pick
    return picks[::-1]


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the positions where ``mask`` is set (all hidden dims)."""
    m = mask.unsqueeze(-1).to(a.dtype)
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1]).clamp_min(1.0)


def hidden_loss(
    student_hidden, teacher_hidden, mask: torch.Tensor, project: nn.Module
) -> torch.Tensor:
    """Sum of matched-layer MSEs; ``*_hidden`` are per-layer outputs (embeddings excluded)."""
    chosen = teacher_layers(len(teacher_hidden), len(student_hidden))
    projected = [project(h) for h in student_hidden]
    dist = torch.stack(
        [torch.stack([_masked_mse(p, teacher_hidden[t], mask) for p in projected]) for t in chosen]
    )
    picks = align(dist.detach())
    return sum(dist[row, s] for row, s in enumerate(picks))


def source_pairs(student, teacher, stack: str) -> list[tuple[int, int]] | None:
    """(student layer, teacher layer) pairs by origin, or None when the origin is unknown.

    The decoder's kept layers are recorded by :func:`nash_core.layer_selection.keep_decoder_layers`
    (``config.nash_decoder_layers_kept``); a stack of the teacher's depth is matched index for
    index (masks remove units, never layers, from it).
    """
    n_s = _num_layers(student.config, stack)
    n_t = _num_layers(teacher.config, stack)
    kept = getattr(student.config, "nash_decoder_layers_kept", None) if stack == "decoder" else None
    if kept and len(kept) == n_s and max(kept) < n_t:
        return list(enumerate(kept))
    return list(zip(range(n_s), range(n_t))) if n_s == n_t else None


def _num_layers(config, stack: str) -> int:
    if stack == "encoder":
        return getattr(config, "num_layers", None) or config.encoder_layers
    return getattr(config, "num_decoder_layers", None) or config.decoder_layers


def paired_hidden_loss(
    student_hidden,
    teacher_hidden,
    mask: torch.Tensor,
    project: nn.Module,
    pairs: list[tuple[int, int]],
) -> torch.Tensor:
    """Sum of the MSEs of fixed (student layer, teacher layer) pairs."""
    return sum(_masked_mse(project(student_hidden[s]), teacher_hidden[t], mask) for s, t in pairs)


def identity_linear(d_in: int, d_out: int) -> nn.Linear:
    lin = nn.Linear(d_in, d_out, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(d_out, d_in))
        lin.bias.zero_()
    return lin


class DistillHook(TrainHook):
    """TrainHook adding KD + hidden-state distillation; its ``task_weight`` weights the task
    loss (the loop applies it: :meth:`nash_core.train._Loop.micro_batch_loss`).

    ``teacher`` may be None when the config uses neither KD nor hidden-state distillation.
    """

    def __init__(
        self, teacher: nn.Module | None, student: nn.Module, cfg: DistillConfig, device=None
    ):
        self.cfg = cfg
        self.uses_teacher = cfg.kd_weight > 0 or cfg.layer_weight > 0
        if self.uses_teacher and teacher is None:
            raise ValueError("distillation weights are set but no teacher was given")
        self.teacher = (
            teacher.eval().requires_grad_(False).to(device) if self.uses_teacher else None
        )
        # widths from the modules: a CoFi export with a pruned hidden dimension keeps the
        # teacher's config.d_model but has a narrower residual stream
        d_s = student.get_input_embeddings().embedding_dim
        d_t = teacher.get_input_embeddings().embedding_dim if self.uses_teacher else d_s
        self.maps = nn.ModuleDict(
            {"encoder": identity_linear(d_s, d_t), "decoder": identity_linear(d_s, d_t)}
        ).to(device)
        self.pairs = (
            {stack: source_pairs(student, teacher, stack) for stack in self.maps}
            if self.uses_teacher and cfg.layer_map == "source"
            else {}
        )

    def param_groups(self, model) -> list[dict]:
        if self.cfg.layer_weight <= 0:
            return []
        return [
            {"params": list(self.maps.parameters()), "weight_decay": 0.0, "name": "distill_maps"}
        ]

    def wants_hidden_states(self) -> bool:
        return self.cfg.layer_weight > 0

    def task_weight(self) -> float:
        return self.cfg.task_weight

    def extra_loss(self, model, batch, outputs, step: int):
        """KD and hidden-state losses (None without a teacher); logs are detached tensors."""
        cfg = self.cfg
        metrics = {"task_loss": outputs.loss.detach()}
        if not self.uses_teacher:
            return None, metrics
        with torch.no_grad():
            t_out = self.teacher(**batch, output_hidden_states=cfg.layer_weight > 0)
        loss = None
        if cfg.kd_weight > 0:
            kd = kd_loss(outputs.logits, t_out.logits, batch["labels"], cfg.temperature)
            loss = cfg.kd_weight * kd
            metrics["kd_loss"] = kd.detach()
        if cfg.layer_weight > 0:
            enc = self._hidden(
                "encoder",
                outputs.encoder_hidden_states[1:],
                t_out.encoder_hidden_states[1:],
                batch["attention_mask"],
            )
            dec = self._hidden(
                "decoder",
                outputs.decoder_hidden_states[1:],
                t_out.decoder_hidden_states[1:],
                batch["labels"] != -100,
            )
            layer = cfg.layer_weight * (enc + dec)
            loss = layer if loss is None else loss + layer
            metrics["layer_loss"] = (enc + dec).detach()
        return loss, metrics

    def _hidden(self, stack: str, student_hidden, teacher_hidden, mask) -> torch.Tensor:
        pairs = self.pairs.get(stack)
        if pairs is None:
            return hidden_loss(student_hidden, teacher_hidden, mask, self.maps[stack])
        return paired_hidden_loss(student_hidden, teacher_hidden, mask, self.maps[stack], pairs)

    def state_dict(self) -> dict:
        return {"maps": self.maps.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.maps.load_state_dict(state["maps"])
