"""Multi-process data parallel with PyTorch's own machinery (``torchrun`` + DDP).

``torchrun --nproc_per_node N -m structpred train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in the environment; each calls
:func:`init` (gloo on CPU, nccl on GPU), wraps the model in ``DistributedDataParallel``
(gradients averaged across processes after each backward), and reads its own shard of every
epoch through ``DistributedSampler``. Only rank 0 logs, draws progress bars and writes
checkpoints. Without those variables everything degrades to one process, same code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
