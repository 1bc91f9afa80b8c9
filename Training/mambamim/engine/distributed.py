"""Process-group setup for ``torchrun`` (NCCL on GPU, gloo on CPU) and single-process runs alike.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is one process
and every helper here degrades to a no-op, so the training loops have a single code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from mambamim.errors import InvalidInput, Unavailable


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, prints progress and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device when available, else CPU; ``cuda`` without CUDA is an error."""
    if name not in ("auto", "cpu", "cuda"):
        raise InvalidInput(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise Unavailable("--device cuda was requested but no CUDA device is available")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group when launched by it; otherwise a one-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, torch_device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistributedContext, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel`` in multi-process runs; the bare module otherwise.

    ``find_unused_parameters`` costs a graph traversal per step; only runs whose model leaves some
    parameters without gradients (MIM ablations) need it.
    """
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank if ``flag`` is true on any rank (used to stop all ranks on Ctrl-C together)."""
    if not ctx.distributed:
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(tensor)
    return bool(tensor.item() > 0)


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()
