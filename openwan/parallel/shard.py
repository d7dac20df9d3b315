"""Sharded DiT weights for multi-process inference (the reference's ``--dit_fsdp``), with FSDP2.

Each process keeps 1/N of every DiT parameter; a block's full weights exist only while that block
runs (gathered before, freed after), so the resident weight memory per process is about 1/N of
the model plus one block. Combine with sequence parallel (``enable_sequence_parallel``) so the N
processes also split the work; alone, every process computes the whole forward.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def fully_shard_dit(model, device_type: str) -> None:
    """FSDP2 over all processes: every block (main and VACE), then the root (training and inference)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for name in ("blocks", "vace_blocks"):
        for block in getattr(model, name, None) or []:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def shard_dit(model, device: Optional[torch.device] = None):
    """Shard ``model`` (a WanModel on its device) over all processes for inference."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("sharding the DiT needs torch.distributed: start with torchrun --nproc_per_node N "
                           "and call openwan.parallel.init_process_group() first")
    fully_shard_dit(model, (device or next(model.parameters()).device).type)
    # FSDP2 keeps the root's own weights (embeddings, head) gathered after a forward, expecting a
    # backward; in inference give them back after every call so only the shards stay resident.
    model.register_forward_hook(lambda module, args, output: module.reshard())
    return model
