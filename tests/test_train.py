"""The training loop on a tiny real T5: learning, exact resume, NaN guard, hooks, limits."""

import math
import os
import signal

import pytest
import torch
from foundation_tiny import corpus_texts, save_t5

from nash_core.config import DataConfig, TrainConfig
from nash_core.data import prepare_splits, tokenize_split
from nash_core.errors import TrainingError
from nash_core.loading import load_seq2seq
from nash_core.train import (
    TrainHook,
    TrainingInterrupted,
    batch_indices,
    lr_scale,
    total_steps,
    train_seq2seq,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data_cfg = DataConfig(
        kind="demo",
        demo={"num_dialogues": 250, "seed": 0},
        max_source_length=64,
        max_target_length=32,
    )
    splits = prepare_splits(data_cfg, root / "data")
    model_dir = save_t5(root / "t5", corpus_texts(250), dec_layers=2)
    _, tok = load_seq2seq(model_dir)
    return {
        "model_dir": model_dir,
        "train": tokenize_split(splits, "train", tok, data_cfg),
        "val": tokenize_split(splits, "validation", tok, data_cfg),
    }


def fresh(setup, dropout: float = 0.0):
    model, tok = load_seq2seq(setup["model_dir"])
    model.config.dropout_rate = dropout
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = dropout
    return model, tok


def cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=24,
        batch_size=8,
        lr=3e-3,
        warmup_steps=4,
        eval_every=8,
        eval_examples=16,
        checkpoint_every=5,
        log_every=4,
    )
    return TrainConfig(**(base | kw))


def run(setup, out, model=None, **kw):
    model, tok = (model, fresh(setup)[1]) if model is not None else fresh(setup)
    train_kw = {k: kw.pop(k) for k in ("hooks", "callback", "eval_fn", "seed") if k in kw}
    result = train_seq2seq(model, tok, setup["train"], setup["val"], cfg(**kw), out, **train_kw)
    return model, result


def test_schedule_and_data_order():
    assert [round(lr_scale(s, 4, 12), 3) for s in (0, 3, 4, 8, 12)] == [0.25, 1.0, 1.0, 0.5, 0.0]
    assert total_steps(TrainConfig(epochs=2, batch_size=8, grad_accum=2), 100) == 13
    assert total_steps(TrainConfig(epochs=2, max_steps=5, batch_size=8), 100) == 5
    gen = batch_indices(10, 4, seed=3)
    first = [next(gen) for _ in range(6)]  # 2 epochs of 4 + 4 + 2
    assert sorted(i for b in first[:3] for i in b) == list(range(10))
    assert [len(b) for b in first] == [4, 4, 2, 4, 4, 2] and first[:3] != first[3:]
    assert next(batch_indices(10, 4, seed=3, start=4)) == first[4]


def test_group_by_length_pads_less_and_still_covers_every_example_once():
    import random

    rng = random.Random(0)
    lengths = [(rng.randint(10, 80), rng.randint(5, 30)) for _ in range(1000)]
    per_epoch = 1000 // 8
    plain = batch_indices(1000, 8, seed=1)
    grouped = batch_indices(1000, 8, seed=1, lengths=lengths)
    epoch_p = [next(plain) for _ in range(per_epoch)]
    epoch_g = [next(grouped) for _ in range(per_epoch)]
    assert sorted(i for b in epoch_g for i in b) == list(range(1000))  # once per epoch
    assert [len(b) for b in epoch_g] == [len(b) for b in epoch_p]  # same boundaries

    def padded(batches):  # tokens the collator pads every batch to
        return sum(len(b) * max(lengths[i][0] for i in b) for b in batches)

    assert padded(epoch_g) < 0.8 * padded(epoch_p)
    # the batch order is still random: not sorted by length over the epoch
    firsts = [lengths[b[0]][0] for b in epoch_g]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
    # resumable: micro-batch k is reachable directly; the next epoch is reshuffled
    again = batch_indices(1000, 8, seed=1, start=37, lengths=lengths)
    assert next(again) == epoch_g[37]
    assert next(grouped) != epoch_g[0]
    odd = batch_indices(1003, 8, seed=1, lengths=lengths + [(5, 5)] * 3)
    epoch_o = [next(odd) for _ in range(126)]
    assert len(epoch_o[-1]) == 3 and sorted(i for b in epoch_o for i in b) == list(range(1003))


def test_loss_goes_down_and_best_dir_loads(setup, tmp_path):
    model, result = run(setup, tmp_path)
    train = [h["train_loss"] for h in result.history if "train_loss" in h]
    evals = [h["eval_val_loss"] for h in result.history if "eval_val_loss" in h]
    assert len(train) == 6 and len(evals) == 3
    assert train[-1] < train[0] - 0.5
    assert evals[-1] < evals[0]
    assert result.last_step == 24 and result.stop_reason == "completed"
    assert result.best_metrics["val_loss"] == min(evals)
    reloaded, tok = load_seq2seq(result.best_dir)
    assert (result.best_dir / "best_metrics.json").is_file() and len(tok) == model.config.vocab_size
    assert all(h["tokens_per_s"] > 0 and h["lr"] > 0 for h in result.history if "lr" in h)

    again = train_seq2seq(model, tok, setup["train"], setup["val"], cfg(), tmp_path)
    assert again.history == result.history  # finished runs are not repeated


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_interrupted_and_resumed_run_is_bit_identical(setup, tmp_path):
    sigint_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run in the background
    kw = dict(grad_accum=2, eval_every=6, checkpoint_every=6, seed=5)
    reference, ref_result = run(setup, tmp_path / "ref", model=fresh(setup, dropout=0.2)[0], **kw)

    def send_sigint(step, metrics):  # Ctrl-C in the middle of step 10
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="stopped at step 8"):
        run(setup, tmp_path / "cut", model=fresh(setup, dropout=0.2)[0], callback=send_sigint, **kw)

    def crash(step, metrics):
        if step == 16:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):  # resumes at 8, dies after 16
        run(setup, tmp_path / "cut", model=fresh(setup, dropout=0.2)[0], callback=crash, **kw)
    resumed, result = run(setup, tmp_path / "cut", model=fresh(setup, dropout=0.2)[0], **kw)

    ref_w, new_w = _weights(reference), _weights(resumed)
    assert all(torch.equal(ref_w[k], new_w[k]) for k in ref_w)
    assert result.best_metrics == ref_result.best_metrics
    evals = lambda r: [h for h in r.history if "eval_score" in h]  # noqa: E731
    assert evals(result) == evals(ref_result)
    assert signal.getsignal(signal.SIGINT) == sigint_before  # the loop restores handlers


class NaNAt(TrainHook):
    """Adds NaN to the loss at the given steps; counts what the loop calls."""

    def __init__(self, steps):
        self.steps, self.after = set(steps), []

    def extra_loss(self, model, batch, outputs, step):
        return (torch.tensor(float("nan")) if step in self.steps else None), {"probe": 1.0}

    def after_step(self, step):
        self.after.append(step)


def test_nan_steps_are_skipped(setup, tmp_path):
    hook = NaNAt({3, 7})
    model, result = run(setup, tmp_path, hooks=[hook], max_steps=10)
    assert result.last_step == 10
    assert hook.after == [0, 1, 2, 4, 5, 6, 8, 9]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(h["probe"] == 1.0 for h in result.history if "probe" in h)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(setup, tmp_path):
    with pytest.raises(TrainingError, match=r"NaN/inf for 3 consecutive steps.*checkpoint"):
        run(setup, tmp_path, hooks=[NaNAt(range(6, 100))], max_steps=20, max_bad_steps=3)
    state = (tmp_path / "checkpoint" / "state.json").read_text()
    assert '"step": 5' in state
    optimizer = torch.load(tmp_path / "checkpoint" / "optimizer.pt", weights_only=True)
    assert optimizer["state"]  # optimizer state of a good step


class Gate(TrainHook):
    """A real extra parameter with its own group, an eligibility rule and extra files."""

    def __init__(self, eligible_from: int):
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.eligible_from, self.step, self.saved = eligible_from, 0, []

    def param_groups(self, model):
        return [
            {
                "params": [self.scale],
                "lr": 0.05,
                "weight_decay": 0.0,
                "scheduled": False,
                "maximize": True,
            }
        ]

    def wants_hidden_states(self):
        return True

    def extra_loss(self, model, batch, outputs, step):
        assert outputs.encoder_hidden_states is not None
        return -0.01 * self.scale, {"scale": float(self.scale.detach())}

    def after_step(self, step):
        self.step = step + 1

    def eval_metrics(self):
        return {"gate_step": self.step}

    def is_eligible(self, metrics):
        return metrics["gate_step"] >= self.eligible_from

    def state_dict(self):
        return {"scale": self.scale.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.scale.copy_(state["scale"])

    def save_best(self, out_dir):
        self.saved.append(self.step)
        (out_dir / "gate.txt").write_text(str(self.scale.item()))


def test_hooks_groups_eligibility_and_save_best(setup, tmp_path):
    gate = Gate(eligible_from=16)
    _, result = run(setup, tmp_path, hooks=[gate])
    # maximize=True ascends -0.01*scale's gradient sign: the scale shrinks at a constant lr
    assert gate.scale.item() < 1.0 - 0.05 * 20
    assert gate.saved and min(gate.saved) >= 16
    assert result.best_metrics["step"] >= 16 and (result.best_dir / "gate.txt").is_file()
    evals = [h for h in result.history if "eval_score" in h]
    assert [h["eval_eligible"] for h in evals] == [0.0, 1.0, 1.0]

    never = Gate(eligible_from=10**6)
    _, none = run(setup, tmp_path / "never", hooks=[never], max_steps=8)
    assert none.best_dir is None and none.best_metrics is None and never.saved == []


def test_eval_fn_freeze_embeddings_and_time_limit(setup, tmp_path):
    scores = iter([0.1, 0.5, 0.3])
    model, _ = fresh(setup)
    emb = model.get_input_embeddings().weight.detach().clone()
    block = model.encoder.block[0].layer[1].DenseReluDense.wi.weight.detach().clone()
    _, result = run(
        setup,
        tmp_path,
        model=model,
        eval_fn=lambda m: {"score": next(scores)},
        freeze_embeddings=True,
    )
    assert result.best_metrics["score"] == 0.5 and result.best_metrics["step"] == 16
    assert torch.equal(model.get_input_embeddings().weight, emb)
    assert not torch.equal(model.encoder.block[0].layer[1].DenseReluDense.wi.weight, block)
    assert model.get_input_embeddings().weight.requires_grad  # restored afterwards

    _, timed = run(setup, tmp_path / "timed", max_steps=10_000, max_time_s=1e-6)
    assert timed.stop_reason == "max_time" and timed.last_step == 1
    assert math.isfinite(timed.best_metrics["val_loss"])

    with pytest.raises(TrainingError, match="must include 'score'"):
        run(setup, tmp_path / "bad", eval_fn=lambda m: {"rouge": 1.0}, max_steps=8)


def test_task_weight_scales_the_loss_the_loop_trains_on(setup, tmp_path):
    """The distillation config's task_weight reaches the loss through the loop itself
    (``_Loop.micro_batch_loss``), not only the hook's own report of it."""
    from nash_core.config import DistillConfig
    from nash_core.distill import DistillHook

    def first_loss(out, hooks):
        model, _ = fresh(setup)
        hooks = [h(model) for h in hooks]
        _, result = run(setup, out, model, max_steps=1, log_every=1, eval_every=100, hooks=hooks)
        return next(h["train_loss"] for h in result.history if "train_loss" in h), result

    weighted = DistillConfig(task_weight=0.25, kd_weight=0.0, layer_weight=0.0)
    plain, _ = first_loss(tmp_path / "plain", [])
    scaled, result = first_loss(tmp_path / "w", [lambda m: DistillHook(None, m, weighted)])
    assert scaled == pytest.approx(0.25 * plain, rel=1e-5)
    task = next(h["task_loss"] for h in result.history if "task_loss" in h)
    assert task == pytest.approx(plain, rel=1e-5)  # the hook reports the unweighted task loss
