"""torchrun support shared by the stages that run on many processes (cache build, training)."""
from __future__ import annotations

import atexit
import importlib
import os

import torch

# torch.distributed.nn's functions take `group=group.WORLD` as a default argument, evaluated when the module
# is first imported. DDP imports it: imported after a process group starts, it would hold that group for
# good, destroy_process_group could not free it, and gloo's worker threads would outlive it. One that
# released a finished collective's tensors while the interpreter exited aborted the process ("terminate
# called without an active exception", exit -6, about one torchrun launch in a hundred:
# benchmarks/ddp_exit.py). Imported here, before langclip or a script that imports it starts a group, its
# defaults are None; imported earlier, after a script started its own group, they are set back to None.


def _unpin_world() -> int:
    """Set back to None the defaults of torch.distributed.nn's functions that hold the running group (the
    module was imported after the group started), as if it had been imported first: None is the default
    group, the same group, so the functions behave alike. How many functions were changed."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as fn

    if not dist.is_initialized():
        return 0
    world, changed = dist.group.WORLD, 0
    for f in list(vars(fn).values()):
        while callable(f):
            defaults = getattr(f, "__defaults__", None)
            if defaults and any(d is world for d in defaults):
                f.__defaults__ = tuple(None if d is world else d for d in defaults)
                changed += 1
            f = getattr(f, "__wrapped__", None)
    return changed


if torch.distributed.is_available():
    importlib.import_module("torch.distributed.nn")
    _unpin_world()


def init_from_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, the process group started if none is (it ends
    when the process exits). A single process (no WORLD_SIZE, or 1) needs no process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        atexit.register(_end_group)
    return dist.get_rank(), world


def _end_group() -> None:
    """A process group langclip starts lives until its process exits, then ends here. Ended after a job,
    a second job in the same torchrun process (two `train()` calls in one script) would start a group
    under the first one's name, read its addresses from torchrun's store and fail to connect. Left to
    the interpreter's teardown, gloo's threads ran into it ("terminate called without an active
    exception", exit -6): a finished job failed. Ending the group ends them only if the group is freed
    (see init_from_env)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
