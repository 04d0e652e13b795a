"""Multi-process data parallel with PyTorch's own machinery (``torchrun`` + DDP).

``torchrun --nproc-per-node N -m structpred train ...`` (or ``--nnodes M`` agents, one per
machine) starts processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address
in the environment; each calls :func:`init` (gloo on CPU, nccl on GPU) and wraps the model in
``DistributedDataParallel`` (gradients averaged over processes after each backward). Sharding,
logging and checkpoint writing follow the *global* rank (``RANK``; only global rank 0 writes);
``LOCAL_RANK`` only picks the CUDA device. Without those variables everything degrades to one
process, same code path.

What makes N processes with per-process batch ``b`` train as one process with batch ``N * b``
(docs/distributed.md lists what is exact and what is not):

* :func:`global_batches`: at each step the processes' batches together are one process's batch;
* :func:`sync_batchnorm`: trainable batch norms take statistics over the global batch (CPU too);
* a loss that is a mean over the batch's images, averaged by DDP, gives the global gradient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Context:
    """Where this process sits: rank in ``[0, world_size)`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str | None = None) -> Context:
    """Join the process group if launched by torchrun, and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world, local, dev)


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: float, ctx: Context) -> float:
    """Mean of a Python float over all processes (the value itself in one process)."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def barrier(ctx: Context) -> None:
    """Wait for every process (no-op in one process)."""
    if ctx.distributed:
        dist.barrier()


def all_equal(value: int, ctx: Context) -> bool:
    """Whether every process holds the same integer ``value`` (True in one process)."""
    if not ctx.distributed:
        return True
    t = torch.tensor([value, -value], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # max(v) and -min(v)
    return int(t[0]) == -int(t[1])


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed torch's global RNG for optimizer step ``step`` of process ``rank``.

    Under torchrun the trainer calls it before each step, so every random draw inside the model
    (samplers, dropout) is a function of ``(seed, step, rank)``: a resumed run draws what the
    uninterrupted one drew on *every* rank (a checkpoint holds rank 0's RNG state only).
    """
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


# ---------------------------------------------------------------------------------- sharding
def global_batches(
    n: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int
) -> list[list[int]]:
    """Process ``rank``'s batches of ``epoch`` over a dataset of ``n`` items.

    One permutation of ``range(n)`` per ``(seed, epoch)`` (``DistributedSampler``'s own draw, so
    one process keeps its order), cut into global batches of ``world_size * batch_size``
    consecutive items; process ``rank`` takes block ``rank`` of each. The union of the processes'
    batches at step ``k`` is then exactly one process's batch ``k`` of size ``world_size *
    batch_size``, and item ``j`` of rank ``r``'s batch is that batch's item ``r * batch_size +
    j``. The last incomplete global batch is dropped, never padded with repeats.
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"batch_size {batch_size}, world_size {world_size}, rank {rank}: out of range")
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    step = world_size * batch_size
    start = rank * batch_size
    return [order[k + start : k + start + batch_size] for k in range(0, n - step + 1, step)]


# ---------------------------------------------------------------------------------- batch norm
class _SumOverProcesses(torch.autograd.Function):
    """``all_reduce(SUM)`` with a gradient: the backward sums the gradients over processes too."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(x: Tensor) -> Tensor:
    """The sum of ``x`` over every process of the default group, differentiable."""
    out: Tensor = _SumOverProcesses.apply(x)
    return out


class _SyncedNorm(nn.modules.batchnorm._BatchNorm):
    """A batch norm whose training statistics are those of the union of every process's batch.

    The same parameters and buffers as the ``nn.BatchNorm*d`` it replaces (same state-dict
    names). In training mode under a process group, per channel the sum and count, then the sum
    of squared deviations, are all-reduced (differentiably: the backward all-reduces the
    gradients, so each process's input gets the gradient of every process's loss), in float64.
    ``nn.SyncBatchNorm`` does the same but only on GPUs; this one runs on gloo (CPU).
    """

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        C = x.shape[1]
        dims = [0, *range(2, x.dim())]  # every axis but the channel's
        shape = [1, C] + [1] * (x.dim() - 2)  # (C,) -> (1, C, 1, ...)
        count = x.new_tensor([x.numel() // max(C, 1)], dtype=torch.float64)
        stats = all_reduce(torch.cat([x.sum(dims, dtype=torch.float64), count]))  # (C + 1,)
        n = stats[-1]
        mean = stats[:-1] / n  # (C,)
        centred = x - mean.to(x.dtype).view(shape)
        var = all_reduce((centred * centred).sum(dims, dtype=torch.float64)) / n  # biased, (C,)
        y = centred * torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y


class SyncedBatchNorm1d(_SyncedNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with statistics over every process's batch (see :class:`_SyncedNorm`)."""


class SyncedBatchNorm2d(_SyncedNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with statistics over every process's batch (see :class:`_SyncedNorm`)."""


class SyncedBatchNorm3d(_SyncedNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with statistics over every process's batch (see :class:`_SyncedNorm`)."""


_SYNCED: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: SyncedBatchNorm1d,
    nn.BatchNorm2d: SyncedBatchNorm2d,
    nn.BatchNorm3d: SyncedBatchNorm3d,
}
_LOCAL = {v: k for k, v in _SYNCED.items()}


def _swap(module: nn.Module, table: dict[type[nn.Module], type[nn.Module]]) -> int:
    """Replace each child whose exact type is in ``table`` by the mapped type, *sharing* its
    parameters and buffers (an optimizer built before keeps working); the count replaced."""
    count = 0
    for name, child in module.named_children():
        cls = table.get(type(child))
        if cls is None:
            count += _swap(child, table)
            continue
        new = cls.__new__(cls)
        new.__dict__.update(child.__dict__)  # same Parameter / buffer objects, same mode
        setattr(module, name, new)
        count += 1
    return count


def sync_batchnorm(module: nn.Module) -> int:
    """Make every plain ``nn.BatchNorm{1,2,3}d`` in ``module`` synchronised, in place; the count.

    ``FrozenBatchNorm2d`` (the detection backbones' default) has no batch statistics and is left
    alone; so are subclasses of the batch norms (their own forward is kept).
    """
    return _swap(module, _SYNCED)


def local_batchnorm(module: nn.Module) -> int:
    """Undo :func:`sync_batchnorm` in place (the plain classes back); the count."""
    return _swap(module, _LOCAL)
