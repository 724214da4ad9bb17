"""The one training loop: teacher, every pruning stage and the final fine-tune run through it.

Reading order: :func:`train_seq2seq` sets things up, then each optimizer step is

    lr schedule -> grad_accum micro-batches (forward, task loss + hooks' extra losses, backward)
    -> NaN/inf guard -> clip model grads -> optimizer.step -> hooks.after_step
    -> log / evaluate + keep best / checkpoint / stop?

Features: AdamW (decay only on matrices), linear warm-up then linear decay to 0, gradient
accumulation, clipping of the model's parameters, bf16 autocast on CUDA (CPU trains in fp32),
optional frozen embeddings, periodic evaluation (validation loss, or ``eval_fn(model)`` returning
a dict with a higher-is-better ``'score'``), the best checkpoint saved as a normal HF directory,
periodic atomic checkpoints with exact resume, a NaN/inf guard, SIGINT/SIGTERM handling and a
wall-clock limit. Under torchrun the same loop is data-parallel (:mod:`nash_core.distributed`:
each rank trains on its share of every batch, gradients are averaged, rank 0 alone evaluates,
writes and reports); in one process those calls do nothing.

Hooks (:class:`TrainHook`) are how pruning plugs in without forking this loop. Subclass it and
override what you need; every method has a do-nothing default:

- ``param_groups(model) -> list[dict]``: extra optimizer groups (``{"params": [...], "lr": ...}``;
  any AdamW option, e.g. ``maximize=True`` for Lagrange multipliers, ``weight_decay=0``).
  ``"scheduled": False`` keeps a group at its lr instead of following warm-up/decay. Parameters
  listed here are removed from the model's own groups and are not clipped.
- ``wants_hidden_states() -> bool``: run the forward with ``output_hidden_states=True``.
- ``task_weight() -> float``: the weight of the task loss (the product over hooks; 1.0).
- ``extra_loss(model, batch, outputs, step) -> (Tensor | None, dict)``: added to the weighted
  task loss (per micro-batch, before the 1/grad_accum scaling): the loss of a micro-batch is
  built here, ``task_weight * outputs.loss + sum of extras``, nowhere else. The dict (floats or
  detached 0-d tensors) is logged; tensors are read on the host only when a log record is
  written or a checkpoint saved, so a GPU is not synchronised once per micro-batch.
- ``after_step(step)``: after each optimizer step (e.g. clamp mask parameters).
- ``eval_metrics() -> dict``: merged into the evaluation metrics (e.g. expected sparsity).
- ``is_eligible(metrics) -> bool``: the best checkpoint is only replaced when every hook agrees
  (e.g. sparsity within epsilon of the target).
- ``state_dict() / load_state_dict(state)``: saved in checkpoints. ``load_state_dict`` must update
  tensors in place (e.g. ``nn.Module.load_state_dict``) so the optimizer keeps pointing at them.
- ``save_best(out_dir)``: extra files written next to the best weights.

Layout of ``out_dir``: ``best/`` (HF model + tokenizer + ``best_metrics.json`` + hook files) and
``checkpoint/`` (``model.safetensors``, ``optimizer.pt``, ``hooks.pt``, ``rng.pt``,
``state.json``). Calling again with the same ``out_dir`` resumes from ``checkpoint/``; a run that
finished returns its stored result. Resuming is exact: the data order is a function of
(seed, position), and the python/numpy/torch RNG states are restored, so an interrupted and
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from nash_core import distributed
from nash_core.config import TrainConfig
from nash_core.data import Seq2SeqCollator
from nash_core.errors import TrainingError
from nash_core.io import atomic_dir, atomic_write_json, read_json
from nash_core.progress import progress_disabled
from nash_core.runtime import stop_on_signals, stop_requested


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived: a checkpoint was written; calling again resumes from it."""


class TrainHook:
    """Extension points of :func:`train_seq2seq` (see the module docstring)."""

    def param_groups(self, model) -> list[dict]:
        return []

    def wants_hidden_states(self) -> bool:
        return False

    def task_weight(self) -> float:
        return 1.0

    def extra_loss(self, model, batch, outputs, step: int) -> tuple[torch.Tensor | None, dict]:
        return None, {}

    def after_step(self, step: int) -> None:
        pass

    def eval_metrics(self) -> dict:
        return {}

    def is_eligible(self, metrics: dict) -> bool:
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def save_best(self, out_dir: Path) -> None:
        pass


@dataclass
class TrainResult:
    best_dir: Path | None  # None when no evaluation was eligible (see TrainHook)
    last_step: int
    best_metrics: dict | None
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "completed"  # completed / max_time


# --------------------------------------------------------------------------- data order
def total_steps(cfg: TrainConfig, num_examples: int) -> int:
    """Optimizer steps: ``max_steps``, ``epochs`` worth of steps, or the smaller of the two."""
    per_step = cfg.batch_size * cfg.grad_accum
    steps = [cfg.max_steps] if cfg.max_steps else []
    if cfg.epochs:
        steps.append(max(1, math.ceil(cfg.epochs * num_examples / per_step)))
    return min(steps)


#: Examples per length-sorted group, in batches (Hugging Face's ``group_by_length`` uses 50).
GROUP_BATCHES = 50


def batch_indices(
    num_examples: int, batch_size: int, seed: int, start: int = 0, lengths: Sequence | None = None
) -> Iterator[list[int]]:
    """Micro-batches of example indices, from micro-batch number ``start`` on.

    Each epoch is a fresh permutation seeded by ``(seed, epoch)``, so position ``start`` can be
    reached without replaying the earlier ones. The last micro-batch of an epoch may be short.
    With ``lengths`` (one sort key per example, e.g. (source, target) token counts), the
    permutation is cut into groups of ``GROUP_BATCHES`` batches, each group sorted by length and
    cut into batches, and the batches shuffled: batches hold examples of similar length, so
    dynamic padding wastes little (on the demo corpus ~19% fewer padded tokens than random
    batches), while every example is still seen once per epoch in a seeded random order.
    """
    per_epoch = math.ceil(num_examples / batch_size)
    epoch, offset = divmod(start, per_epoch)
    while True:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(num_examples, generator=gen).tolist()
        if lengths is not None:
            order = _grouped_by_length(order, lengths, batch_size, gen)
        for b in range(offset, per_epoch):
            yield order[b * batch_size : (b + 1) * batch_size]
        epoch, offset = epoch + 1, 0


def _grouped_by_length(
    order: list[int], lengths: Sequence, batch_size: int, gen: torch.Generator
) -> list[int]:
    """``order`` regrouped so that consecutive ``batch_size`` slices hold similar lengths; the
    batch boundaries stay where they were (only the last batch is short)."""
    group = GROUP_BATCHES * batch_size
    batches: list[list[int]] = []
    for g in range(0, len(order), group):
        chunk = sorted(order[g : g + group], key=lambda i: lengths[i])  # stable: ties keep order
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    last = batches.pop() if len(batches[-1]) < batch_size else None
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
    return [i for b in shuffled + ([last] if last else []) for i in b]


def lr_scale(step: int, warmup: int, total: int) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# --------------------------------------------------------------------------- helpers
def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _build_optimizer(model, cfg: TrainConfig, hooks: Sequence[TrainHook]) -> tuple:
    hook_groups = [g for h in hooks for g in h.param_groups(model)]
    taken = {id(p) for g in hook_groups for p in g["params"]}
    model_params = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [
        {"params": [p for p in model_params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in model_params if p.dim() < 2], "weight_decay": 0.0},
    ] + hook_groups
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g.setdefault("lr", cfg.lr)
        g["base_lr"] = g["lr"]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    return optimizer, model_params


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _frozen_embeddings(model, freeze: bool) -> Iterator[None]:
    params = {
        id(m.weight): m.weight
        for m in (model.get_input_embeddings(), model.get_output_embeddings())
        if m is not None
    }
    before = {k: p.requires_grad for k, p in params.items()}
    if freeze:
        for p in params.values():
            p.requires_grad_(False)
    try:
        yield
    finally:
        for k, p in params.items():
            p.requires_grad_(before[k])


@torch.no_grad()
def validation_loss(
    model, val_ds, collate, batch_size: int, limit: int, device: torch.device
) -> float:
    """Mean per-token cross-entropy over the first ``limit`` validation examples."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    n = min(limit, len(val_ds))
    for start in range(0, n, batch_size):
        batch = _to_device(
            collate([val_ds[i] for i in range(start, min(n, start + batch_size))]), device
        )
        count = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss) * count
        tokens += count
    model.train(was_training)
    return total / max(1, tokens)


# --------------------------------------------------------------------------- checkpoints
class _Checkpointer:
    """Atomic save/restore of everything needed to continue a run bit-for-bit."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "checkpoint"

    def exists(self) -> bool:
        return (self.dir / "state.json").is_file()

    def save(self, model, optimizer, hooks, state: dict) -> None:
        with atomic_dir(self.dir) as tmp:
            save_model(model, str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save([h.state_dict() for h in hooks], tmp / "hooks.pt")
            torch.save(_rng_state(), tmp / "rng.pt")
            atomic_write_json(tmp / "state.json", state)

    def load(self, model, optimizer, hooks, device) -> dict:
        load_model(model, str(self.dir / "model.safetensors"), device=str(device))
        for hook, hook_state in zip(hooks, torch.load(self.dir / "hooks.pt", weights_only=True)):
            hook.load_state_dict(hook_state)
        optimizer.load_state_dict(
            torch.load(self.dir / "optimizer.pt", weights_only=True, map_location=device)
        )
        _set_rng_state(torch.load(self.dir / "rng.pt", weights_only=True))
        return read_json(self.dir / "state.json")


def _save_best(model, tokenizer, hooks, metrics: dict, out_dir: Path) -> Path:
    final = out_dir / "best"
    with atomic_dir(final) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for hook in hooks:
            hook.save_best(tmp)
        atomic_write_json(tmp / "best_metrics.json", metrics)
    return final


def _result(out_dir: Path, state: LoopState) -> TrainResult:
    best = out_dir / "best"
    return TrainResult(
        best if best.is_dir() and state.best_metrics is not None else None,
        state.step,
        state.best_metrics,
        state.history,
        state.stop_reason or "completed",
    )


# --------------------------------------------------------------------------- loop state
@dataclass
class LogWindow:
    """Training numbers summed since the last log record (``loss``/``n``/``extra`` are
    checkpointed, so the first train_loss logged after a resume averages the same steps as
    without the interruption; ``tokens``/``t0`` only feed tokens_per_s and restart)."""

    loss: float = 0.0
    n: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    t0: float = field(default_factory=time.monotonic)
    #: hook logs of the good steps not yet added to ``extra``: per step, (name, value) in order
    pending: list[list[tuple[str, Any]]] = field(default_factory=list)

    def flush(self, grad_accum: int) -> None:
        """Add the pending hook logs to ``extra`` (the host reads the tensors here)."""
        for step_logs in self.pending:
            step_extra: dict[str, float] = {}
            for k, v in step_logs:
                step_extra[k] = step_extra.get(k, 0.0) + float(v) / grad_accum
            for k, v in step_extra.items():
                self.extra[k] = self.extra.get(k, 0.0) + v
        self.pending = []


@dataclass
class LoopState:
    """Everything the loop carries from step to step; ``checkpoint/state.json`` is
    :meth:`to_json` of it (with the window as ``log_window``)."""

    step: int = 0  # optimizer steps taken
    micro_batches: int = 0  # position in the (seed, position) data order
    best_score: float | None = None
    best_metrics: dict | None = None
    bad_steps: int = 0  # consecutive NaN/inf steps
    elapsed_s: float = 0.0
    history: list[dict] = field(default_factory=list)
    done: bool = False
    stop_reason: str | None = None
    window: LogWindow = field(default_factory=LogWindow)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "window"}
        w = self.window
        out["log_window"] = {"loss": w.loss, "n": w.n, "extra": dict(w.extra)}
        return out

    @classmethod
    def from_json(cls, obj: dict) -> LoopState:
        obj = dict(obj)
        window = LogWindow(**obj.pop("log_window", {}))
        return cls(**obj, window=window)


@dataclass(kw_only=True)
class _Loop:
    """The fixed parts of one :func:`train_seq2seq` call and its small steps, in call order.
    Built by keyword only (named state, not a row of positionals)."""

    model: Any
    tokenizer: Any
    train_ds: Any
    val_ds: Any
    cfg: TrainConfig
    out_dir: Path
    hooks: list[TrainHook]
    callback: Callable[[int, dict], Any] | None
    device: torch.device
    eval_fn: Callable[[Any], dict] | None
    collate: Callable[[list], dict]
    optimizer: Any
    model_params: list
    ckpt: _Checkpointer
    steps: int
    seed: int
    state: LoopState
    main: bool = field(init=False)
    wants_hidden: bool = field(init=False)

    def __post_init__(self) -> None:
        self.main = distributed.is_main_process()  # the rank that writes and reports
        self.wants_hidden = any(h.wants_hidden_states() for h in self.hooks)
        self.task_weight = math.prod(h.task_weight() for h in self.hooks)

    # ---- lr schedule
    def set_lr(self, step: int) -> None:
        scale = lr_scale(step, self.cfg.warmup_steps, self.steps)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * (scale if g.get("scheduled", True) else 1.0)

    # ---- forward / backward over grad_accum micro-batches
    def accumulate(self, batches: Iterator[list[int]], step: int, autocast) -> tuple[float, list]:
        """Gradients of one optimizer step; returns its mean loss and the hooks' logs."""
        cfg, state = self.cfg, self.state
        self.optimizer.zero_grad(set_to_none=True)
        losses, step_logs = [], []
        for _ in range(cfg.grad_accum):
            indices = distributed.shard(next(batches))
            batch = self.collate([self.train_ds[i] for i in indices])
            state.window.tokens += int(batch["attention_mask"].sum())  # on the host, before
            state.window.tokens += int((batch["labels"] != -100).sum())  # the copy to device
            batch = _to_device(batch, self.device)
            state.micro_batches += 1
            with autocast:
                outputs = self.model(**batch, output_hidden_states=self.wants_hidden)
                loss, logs = self.micro_batch_loss(batch, outputs, step)
            (loss / cfg.grad_accum).backward()
            losses.append(loss.detach())
            step_logs.extend(logs)
        step_loss = 0.0  # one host sync per step (the NaN/inf guard needs the value)
        for loss in losses:
            step_loss += float(loss) / cfg.grad_accum
        return step_loss, step_logs

    def micro_batch_loss(self, batch, outputs, step: int) -> tuple[torch.Tensor, list]:
        """The one place the loss is built: task_weight * task loss + the hooks' extras."""
        loss = outputs.loss if self.task_weight == 1.0 else self.task_weight * outputs.loss
        logs = []
        for hook in self.hooks:
            extra, hook_logs = hook.extra_loss(self.model, batch, outputs, step)
            if extra is not None:
                loss = loss + extra
            logs.extend((k, v.detach() if torch.is_tensor(v) else v) for k, v in hook_logs.items())
        return loss, logs

    # ---- (data-parallel: average over ranks) NaN/inf guard, clipping, update
    def update(self, step: int, step_loss: float, step_logs: list) -> None:
        distributed.average_gradients(p for g in self.optimizer.param_groups for p in g["params"])
        step_loss = distributed.mean(step_loss)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.model_params, self.cfg.max_grad_norm)
            if self.cfg.max_grad_norm
            else None
        )
        finite = math.isfinite(step_loss) and (grad_norm is None or bool(torch.isfinite(grad_norm)))
        if not finite:
            self.skip_bad_step(step)
            return
        self.optimizer.step()
        for hook in self.hooks:
            hook.after_step(step)
        self.state.bad_steps = 0
        w = self.state.window
        w.loss += step_loss
        w.n += 1
        w.pending.append(step_logs)  # read on the host when logged (see LogWindow.flush)

    def skip_bad_step(self, step: int) -> None:
        """Drop a NaN/inf step's gradients; raise after ``max_bad_steps`` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.state.bad_steps += 1
        if self.state.bad_steps < self.cfg.max_bad_steps:
            return
        kept = (
            f"the last good checkpoint is {self.ckpt.dir}"
            if self.ckpt.exists()
            else "no checkpoint was written yet"
        )
        raise TrainingError(
            f"loss was NaN/inf for {self.state.bad_steps} consecutive steps (up to "
            f"step {step + 1}; max_bad_steps={self.cfg.max_bad_steps}); {kept}. Lower "
            "the learning rate, enable max_grad_norm, or check the data."
        )

    # ---- log
    def log(self, step: int, bar) -> None:
        w = self.state.window
        if step % self.cfg.log_every != 0 or not w.n:
            return
        w.flush(self.cfg.grad_accum)
        seconds = time.monotonic() - w.t0
        tokens = distributed.mean(w.tokens) * distributed.world_size()
        record = {
            "step": step,
            "train_loss": w.loss / w.n,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_s": tokens / max(seconds, 1e-9),
            **{k: v / w.n for k, v in w.extra.items()},
        }
        self.state.history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}")
        if self.callback and self.main:
            self.callback(step, record)
        self.state.window = LogWindow()

    # ---- evaluate + keep best
    def measure(self) -> dict:
        model = self.model
        if self.eval_fn is not None:
            was_training = model.training
            model.eval()
            metrics = dict(self.eval_fn(model))
            model.train(was_training)
            if "score" not in metrics:
                raise TrainingError(
                    f"eval_fn returned {sorted(metrics)}: it must include "
                    "'score' (higher is better)"
                )
        else:
            cfg = self.cfg
            loss = validation_loss(
                model, self.val_ds, self.collate, cfg.batch_size, cfg.eval_examples, self.device
            )
            metrics = {"val_loss": loss, "score": -loss}
        for hook in self.hooks:
            metrics.update(hook.eval_metrics())
        return {k: float(v) for k, v in metrics.items()}

    def evaluate(self, step: int) -> None:
        # rank 0 evaluates; every rank takes its numbers, so all keep the same best state
        state = self.state
        metrics = distributed.broadcast(self.measure() if self.main else None)
        eligible = all(h.is_eligible(metrics) for h in self.hooks)
        better = state.best_score is None or metrics["score"] > state.best_score
        if eligible and better:
            state.best_score, state.best_metrics = metrics["score"], {**metrics, "step": step}
            if self.main:
                _save_best(self.model, self.tokenizer, self.hooks, state.best_metrics, self.out_dir)
        record = {
            "step": step,
            **{f"eval_{k}": v for k, v in metrics.items()},
            "eval_eligible": float(eligible),
        }
        state.history.append(record)
        if self.callback and self.main:
            self.callback(step, record)

    # ---- evaluate / checkpoint / stop after a step; True when training is over
    def end_of_step(self, step: int, started: float, bar) -> bool:
        cfg, state = self.cfg, self.state
        state.elapsed_s = time.monotonic() - started
        out_of_time = distributed.any_rank(
            cfg.max_time_s is not None and state.elapsed_s >= cfg.max_time_s
        )
        stop = distributed.any_rank(bool(stop_requested()))
        last = step >= self.steps or out_of_time
        if step % cfg.eval_every == 0 or last:
            self.evaluate(step)
        if last:
            state.done = True
            state.stop_reason = "max_time" if step < self.steps else "completed"
        if self.main and (step % cfg.checkpoint_every == 0 or last or stop):
            state.elapsed_s = time.monotonic() - started
            state.window.flush(cfg.grad_accum)
            self.ckpt.save(self.model, self.optimizer, self.hooks, state.to_json())
        if stop:
            bar.close()
            distributed.barrier()  # the checkpoint is written before anyone leaves
            raise TrainingInterrupted(
                f"{stop_requested() or 'a signal'} received: stopped at step {step} with a "
                f"checkpoint in {self.ckpt.dir}; run again to resume"
            )
        return last

    def run(self) -> None:
        """The optimizer steps from ``state.step`` to the end (or a stop)."""
        cfg, state, train_ds = self.cfg, self.state, self.train_ds
        autocast = torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and self.device.type == "cuda"
        )
        lengths = (
            list(zip(map(len, train_ds["input_ids"]), map(len, train_ds["labels"])))
            if cfg.group_by_length
            else None
        )
        batches = batch_indices(
            len(train_ds), cfg.batch_size, self.seed, state.micro_batches, lengths
        )
        started = time.monotonic() - state.elapsed_s
        bar = tqdm(
            total=self.steps,
            initial=state.step,
            desc="train",
            unit="step",
            disable=progress_disabled() or not self.main,
            dynamic_ncols=True,
        )
        self.model.train()
        try:
            while state.step < self.steps:
                step = state.step
                self.set_lr(step)
                step_loss, step_logs = self.accumulate(batches, step, autocast)
                self.update(step, step_loss, step_logs)
                state.step = step = step + 1
                bar.update(1)
                self.log(step, bar)
                if self.end_of_step(step, started, bar):
                    break
        finally:
            bar.close()


# --------------------------------------------------------------------------- the loop
def train_seq2seq(
    model,
    tokenizer,
    train_ds,
    val_ds,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    hooks: Sequence[TrainHook] = (),
    callback: Callable[[int, dict], Any] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    eval_fn: Callable[[Any], dict] | None = None,
    collate: Callable[[list], dict] | None = None,
) -> TrainResult:
    """Train ``model`` in place on tokenised ``train_ds``; see the module docstring.

    ``train_ds``/``val_ds``: sequences of dicts with input_ids, attention_mask, labels (e.g. from
    :func:`nash_core.data.tokenize_split`). ``callback(step, metrics)`` gets training metrics
    every ``cfg.log_every`` steps and evaluation metrics (prefixed ``eval_``) after each
    evaluation. Raises :class:`TrainingError` after ``cfg.max_bad_steps`` consecutive NaN/inf
    steps and :class:`TrainingInterrupted` after SIGINT/SIGTERM (both keep the checkpoint).
    """
    out_dir = Path(out_dir)
    device = torch.device(device or "cpu")
    hooks = list(hooks)
    if len(train_ds) == 0:
        raise TrainingError("the training split is empty after tokenisation")
    ckpt = _Checkpointer(out_dir)
    model.to(device)

    with _frozen_embeddings(model, cfg.freeze_embeddings):
        optimizer, model_params = _build_optimizer(model, cfg, hooks)
        if ckpt.exists():
            state = LoopState.from_json(ckpt.load(model, optimizer, hooks, device))
            if state.done:
                return _result(out_dir, state)
        else:
            state = LoopState()
            torch.manual_seed(seed)  # same dropout / mask noise for every fresh run
        loop = _Loop(
            model=model,
            tokenizer=tokenizer,
            train_ds=train_ds,
            val_ds=val_ds,
            cfg=cfg,
            out_dir=out_dir,
            hooks=hooks,
            callback=callback,
            device=device,
            eval_fn=eval_fn,
            collate=collate or Seq2SeqCollator(tokenizer),
            optimizer=optimizer,
            model_params=model_params,
            ckpt=ckpt,
            steps=total_steps(cfg, len(train_ds)),
            seed=seed,
            state=state,
        )
        with stop_on_signals():  # process-wide: works when Prefect trains in a worker thread
            loop.run()
    distributed.barrier()  # rank 0 has written best/ and the final checkpoint
    model.eval()
    return _result(out_dir, state)
