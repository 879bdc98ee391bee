"""torchrun support shared by the stages that run on many processes (cache build, training)."""
from __future__ import annotations

import os

import torch


def init_from_env() -> tuple[int, int, bool]:
    """(rank, world size, whether this call created the process group) from torchrun's environment.
    A single process (no WORLD_SIZE, or 1) needs no process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), world, True
    return dist.get_rank(), world, False
