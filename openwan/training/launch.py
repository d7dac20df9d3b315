"""Processes, devices and model wrapping for training: torchrun / local spawn, FSDP2 / DDP.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) :func:`init_distributed` joins
the process group (gloo on CPU, nccl on CUDA, one GPU per process). :func:`spawn` runs a function on N
local processes without torchrun. :func:`wrap_model` applies the config's ``parallel`` mode:
``fsdp`` shards every DiT block then the root with FSDP2 (``fully_shard``), ``ddp`` replicates the
model (DistributedDataParallel).
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn

# the group is joined, waited on and left as inference does it (gloo waits with monitored_barrier: sequence.barrier)
from openwan.parallel.sequence import barrier, end_process_group, init_process_group as init_distributed  # noqa: F401


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world() > 1
                            else torch.cuda.current_device())
    return torch.device("cpu")


def wrap_model(module: nn.Module, mode: str, device: torch.device) -> tuple[nn.Module, str]:
    """(the module to call for training, the parallel mode used) for ``mode`` auto | fsdp | ddp | none."""
    if world() == 1:
        return module, "none"
    if mode == "auto":
        mode = "fsdp"
    if mode == "none":
        raise ValueError("parallel: none with several processes; use fsdp or ddp")
    if mode == "fsdp":
        from openwan.parallel.shard import fully_shard_dit
        fully_shard_dit(module, device.type)
        return module, mode
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None), mode


def _worker(local_rank: int, nprocs: int, port: int, fn: Callable, args: tuple):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(nprocs), LOCAL_RANK=str(local_rank))
    torch.set_num_threads(1)
    init_distributed()
    try:
        fn(*args)
    finally:
        end_process_group(wait_for_all=False)


def spawn(fn: Callable, args: tuple, nprocs: int, start_method: str = "spawn") -> None:
    """Run ``fn(*args)`` on ``nprocs`` local processes joined in one process group (gloo on CPU, nccl on
    CUDA). ``fn`` must be importable (a module-level function). Blocks until all finish; an error in one
    is raised here. ``start_method="fork"`` starts faster but must not be used once CUDA is initialised."""
    import torch.multiprocessing as mp

    from openwan.runtime import free_port
    mp.start_processes(_worker, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=True, start_method=start_method)
