"""Multi-GPU and multi-node training under ``torchrun`` (DistributedDataParallel).

The training entry points (:mod:`helpers.training.finetune`, :mod:`helpers.training.supervised`) call
:func:`setup` first. Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), it joins the
process group with NCCL when CUDA is available and gloo otherwise, and pins each process to the GPU
of its ``LOCAL_RANK``; started as a plain process it runs alone without a process group, so one
code path serves a laptop, one GPU, ``torchrun --nproc_per_node=8`` and a multi-node job
(``torchrun --nnodes=N --rdzv-backend=c10d --rdzv-endpoint=host:port``; every node must see the
same checkpoint folder, e.g. a shared file system).

Batch sizes in the recipes are *global* (the paper's 256 and 1,024 images per step): each of the
``world_size`` processes takes ``batch_size / world_size`` images per step, so the optimisation is
the same whatever the number of GPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job: ``rank`` among ``world_size`` processes, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: Any  # torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and shows progress bars."""
        return self.rank == 0


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as ``torchrun`` exports them; (0, 1, 0) for a plain process."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: str | None = None) -> Context:
    """Join the process group ``torchrun`` describes (no-op for a single process).

    ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (None: CUDA when available). Under ``torchrun`` a
    CUDA device becomes ``cuda:<LOCAL_RANK>``, one GPU per process.
    """
    import torch
    import torch.distributed as dist

    rank, world, local = world_from_env()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if world > 1 or dev.index is None:
            dev = torch.device("cuda", local if world > 1 else 0)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return Context(rank, world, local, dev)


def teardown() -> None:
    """Leave the process group (if this process joined one)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    import torch.distributed as dist

    if ctx.distributed:
        dist.barrier()


def broadcast(ctx: Context, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a decision only rank 0 may take, e.g. which checkpoint)."""
    import torch.distributed as dist

    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(ctx: Context, value):
    """Mean of a scalar tensor over the ranks (the loss every rank reports for the same step)."""
    import torch.distributed as dist

    if not ctx.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size
