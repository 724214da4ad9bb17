"""Data parallelism as the training loop sees it: one process per GPU, started by torchrun.

Every function here is a no-op (or returns its input) when no ``torch.distributed`` process
group is initialised, so :func:`nash_core.train.train_seq2seq` runs exactly as before in a
single process. Under torchrun (:mod:`nash_core.launch`) each rank:

- trains on its strided share of every micro-batch (:func:`shard`): ``batch_size`` stays the
  GLOBAL batch, so the number of steps, the learning-rate schedule and the data order do not
  depend on how many GPUs there are;
- averages gradients after backward (:func:`average_gradients`), then clips and steps the same
  optimizer state as every other rank, so the replicas never drift apart;
- agrees with the others on anything that decides control flow (loss for the NaN guard, time
  limit, a received signal) through :func:`mean` / :func:`any_rank`, because a rank that takes a
  different branch would wait forever in the next collective.

Why no ``DistributedDataParallel`` wrapper: the pruning hooks train parameters that are not the
model's (mask logits, Lagrange multipliers) and DDP synchronises only the wrapped module. One
flat all-reduce over every optimizer parameter covers them all and leaves the model unwrapped,
so hooks, checkpoints and ``save_pretrained`` see the same module as in one process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main_process() -> bool:
    """Rank 0 (or no process group): the one that writes checkpoints, results and logs."""
    return rank() == 0


def _device() -> torch.device:
    """Where collective tensors live: NCCL needs them on this rank's GPU, gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(indices: list[int]) -> list[int]:
    """This rank's strided share of a global micro-batch.

    A batch smaller than the world (the end of an epoch) is cycled, so every rank has at least
    one example: each rank must run its forward/backward for the collectives to line up.
    """
    r, w = rank(), world_size()
    if w == 1:
        return indices
    return [indices[i % len(indices)] for i in range(r, max(len(indices), w), w)]


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace every trainable parameter's gradient by its mean over the ranks.

    One all-reduce per (device, dtype) bucket; a missing gradient counts as zeros, so every rank
    sends buffers of the same size.
    """
    if not is_active():
        return
    buckets: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in params:
        if p.requires_grad:
            buckets.setdefault((p.device, p.dtype), []).append(p)
    for bucket in buckets.values():
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bucket]
        )
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for p in bucket:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()


def _all_reduce(value: float, op) -> float:
    t = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=op)
    return float(t.item())


def mean(value: float) -> float:
    """The mean of a per-rank number (loss, throughput) over the ranks."""
    if not is_active():
        return value
    return _all_reduce(value, dist.ReduceOp.SUM) / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (a signal, the time limit)."""
    if not is_active():
        return bool(flag)
    return _all_reduce(1.0 if flag else 0.0, dist.ReduceOp.MAX) > 0


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; other ranks may pass None)."""
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here (e.g. rank 0 finished writing what the others read)."""
    if is_active():
        dist.barrier()
