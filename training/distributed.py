"""Process group setup under torchrun and the collective helpers the trainer needs.

`python training/curriculum.py` runs single-process; `torchrun --nproc_per_node N
training/curriculum.py ...` runs N data-parallel replicas (RANK / WORLD_SIZE / LOCAL_RANK from
torchrun), each wrapped in torch's DistributedDataParallel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from bua.training.config import DistributedConfig


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(config: DistributedConfig, device: str = "auto") -> DistContext:
    """Joins the process group when launched by torchrun, else a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        backend = config.backend
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl" and dev.type != "cuda":
            raise RuntimeError("distributed.backend nccl needs CUDA devices; use gloo on CPU")
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timedelta(minutes=30))
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sums `tensor` over ranks (in place; returned for chaining). No-op single-process."""
    if ctx.distributed:
        # gloo reduces CPU tensors, nccl CUDA ones: keep the tensor where the backend wants it
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, ctx: DistContext):
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, ctx: DistContext) -> list:
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
