"""Distillation: masked KD with T^2, order-constrained layer matching, the hook's wiring."""

import copy

import pruning_tiny as pt
import pytest
import torch
import torch.nn.functional as F

from nash_core.config import DistillConfig
from nash_core.distill import (
    DistillHook,
    align,
    hidden_loss,
    identity_linear,
    kd_loss,
    source_pairs,
    teacher_layers,
)
from nash_core.layer_selection import keep_decoder_layers


def test_kd_loss_value_masks_padding_and_scales_by_t2():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    labels = torch.tensor([[4, 5, -100], [6, -100, -100]])
    keep = labels != -100
    manual = (
        sum(
            F.kl_div(F.log_softmax(s[i, j] / 2, -1), F.softmax(t[i, j] / 2, -1), reduction="sum")
            for i, j in keep.nonzero().tolist()
        )
        / 3
        * 4
    )
    assert kd_loss(s, t, labels, 2.0).item() == pytest.approx(manual.item(), rel=1e-5)
    s2 = s.clone()
    s2[1, 2] += 100.0  # a padding position: must not matter
    assert kd_loss(s2, t, labels, 2.0).item() == pytest.approx(manual.item(), rel=1e-5)
    assert kd_loss(t, t, labels, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_layers_and_order_constrained_alignment():
    assert teacher_layers(12, 4) == [2, 5, 8, 11]
    assert teacher_layers(6, 2) == [2, 5]
    assert teacher_layers(3, 6) == [0, 1, 2]
    # unconstrained argmin would map both teacher layers to student layer 2
    d = torch.tensor([[5.0, 1.0, 0.5], [9.0, 9.0, 0.1]])
    assert align(d) == [1, 2]
    d = torch.tensor([[0.1, 5.0, 5.0, 5.0], [5.0, 5.0, 0.2, 5.0], [5.0, 5.0, 0.1, 0.3]])
    # greedy from the last teacher layer (as the reference): 2 -> student 2, then 1 must go below
    assert align(d) == [0, 1, 2]


def test_identity_map_and_zero_layer_loss_for_identical_states():
    lin = identity_linear(8, 8)
    x = torch.randn(2, 3, 8)
    assert torch.equal(lin(x), x)
    states = [torch.randn(2, 3, 8) for _ in range(3)]
    assert hidden_loss(states, states, torch.ones(2, 3), lin).item() == pytest.approx(0.0, abs=1e-7)
    assert hidden_loss(states[:2], states, torch.ones(2, 3), lin).item() > 0


def test_hook_with_teacher_copy_gives_zero_distillation_and_trains_only_student():
    teacher = pt.t5(dec=3)
    student = copy.deepcopy(teacher)
    cfg = DistillConfig(task_weight=1.0, kd_weight=0.5, layer_weight=0.1, temperature=2.0)
    hook = DistillHook(teacher, student, cfg)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student.train()
    b = pt.batch()
    out = student(**b, output_hidden_states=hook.wants_hidden_states())
    loss, metrics = hook.extra_loss(student, b, out, 0)
    assert metrics["kd_loss"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["layer_loss"] == pytest.approx(0.0, abs=1e-6)
    keep_decoder_layers(student, [0, 2])  # now the depths differ: distillation has work to do
    out = student(**b, output_hidden_states=True)
    loss, metrics = hook.extra_loss(student, b, out, 0)
    assert metrics["kd_loss"] > 0 and metrics["layer_loss"] > 0
    (out.loss + loss).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert hook.maps["decoder"].weight.grad is not None
    assert hook.param_groups(student)[0]["params"] == list(hook.maps.parameters())


def test_task_weight_rescales_task_loss_without_teacher():
    student = pt.bart()
    hook = DistillHook(
        None, student, DistillConfig(task_weight=0.25, kd_weight=0.0, layer_weight=0.0)
    )
    out = student(**pt.batch())
    extra, logs = hook.extra_loss(student, pt.batch(), out, 0)
    # the loop builds task_weight * task loss + extras (train._Loop.micro_batch_loss)
    assert extra is None and hook.task_weight() == 0.25
    assert float(logs["task_loss"]) == pytest.approx(out.loss.item(), rel=1e-6)
    with pytest.raises(ValueError):
        DistillHook(None, student, DistillConfig(kd_weight=0.5))


@pytest.mark.parametrize("make", [pt.t5, pt.bart])
def test_source_layer_map_pairs_each_kept_layer_with_its_origin(make):
    """layer_map 'source': a kept decoder layer is matched to the teacher layer it was copied
    from, so a student that is exactly that copy has zero layer loss at those layers."""
    teacher = make(dec=4)
    student = copy.deepcopy(teacher)
    keep_decoder_layers(student, [0, 3])
    assert source_pairs(student, teacher, "decoder") == [(0, 0), (1, 3)]
    assert source_pairs(student, teacher, "encoder") == [(0, 0), (1, 1)]
    keep_decoder_layers(student, [1])  # composes with the earlier removal: teacher layer 3
    assert source_pairs(student, teacher, "decoder") == [(0, 3)]

    student = copy.deepcopy(teacher)
    keep_decoder_layers(student, [0, 3])
    b = pt.batch()
    out = student(**b, output_hidden_states=True)
    source = DistillHook(
        teacher, student, DistillConfig(kd_weight=0.0, layer_weight=1.0, layer_map="source")
    )
    aligned = DistillHook(teacher, student, DistillConfig(kd_weight=0.0, layer_weight=1.0))
    # the encoder is an exact copy and the first kept decoder layer is teacher layer 0: under
    # 'source' only the last layer (teacher 3 after student 0 instead of teacher 2) differs;
    # 'aligned' compares teacher layers 1 and 3 (evenly spaced), so layer 1 adds a distance
    t_out = teacher(**b, output_hidden_states=True)
    mask = b["labels"] != -100
    last = source.maps["decoder"](out.decoder_hidden_states[2])
    expected = ((last - t_out.decoder_hidden_states[4]) ** 2 * mask[..., None]).sum() / (
        mask.sum() * last.shape[-1]
    )
    assert source.extra_loss(student, b, out, 0)[1]["layer_loss"] == pytest.approx(
        expected.item(), rel=1e-5
    )
    assert aligned.extra_loss(student, b, out, 0)[1]["layer_loss"] > expected.item() * 1.01
