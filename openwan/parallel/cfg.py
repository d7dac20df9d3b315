"""CFG parallel inference, on torch.distributed: the two passes of classifier-free guidance on two processes.

A guided step runs the DiT twice on the same input, with the prompt (cond) and with the negative prompt (uncond),
and mixes them: ``uncond + scale (cond - uncond)``. The two passes do not depend on each other, so two processes can
make one each: process 0 the cond pass, process 1 the uncond pass, each a batch of one on its own whole DiT, and one
all_gather a forward gives both of them both outputs:

    step:  out_r = model(x, t, context_r)          context_0 = the prompt's, context_1 = the negative prompt's
           all_gather(out)                          (one latent-sized output from each process)
           v = uncond + scale (cond - uncond)       on both processes, as one process does

The video is then one process's with ``cfg_batch=False`` (the two passes one after the other, each a batch of one),
bit for bit; the default one-process call batches the two passes into one forward, whose float rounding may differ.
Every pass a call makes is shared so: every window of a long video (``continue``'s one after another, the
``windows`` method's, the refinement pass's), a video of the native length, each Wan 2.2 A14B expert. A step without
guidance (scale 1, a distilled model, a guidance interval's low steps) runs the cond pass on both processes.

    init_process_group()                   # under torchrun, 2 processes
    enable_cfg_parallel(pipe)              # pipe.cfg_share: the guided passes split between the two
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from openwan.parallel.share import Share, process_group_needed


@dataclass(frozen=True)
class CfgShare(Share):
    """The two processes the guided passes are split over: rank 0 runs the cond pass, rank 1 the uncond pass."""

    def pair(self, mine: torch.Tensor) -> tuple:
        """(cond, uncond) on both processes, from this process's pass ``mine``."""
        parts = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(parts, mine.contiguous(), group=self.group)
        return parts[0], parts[1]


def enable_cfg_parallel(pipe, group: Optional[dist.ProcessGroup] = None) -> CfgShare:
    """Split the guided passes of ``pipe``'s calls between the two processes of ``group`` (default: all): sets and
    returns ``pipe.cfg_share``."""
    if not (dist.is_available() and dist.is_initialized()):
        raise process_group_needed("CFG parallel", "--cfg_parallel")
    world = dist.get_world_size(group)
    if world != 2:
        raise ValueError(f"CFG parallel runs the two passes of guidance on two processes; this group has {world}: "
                         f"start with torchrun --nproc_per_node 2")
    pipe.cfg_share = CfgShare(group, dist.get_rank(group), world)
    return pipe.cfg_share


__all__ = ["CfgShare", "enable_cfg_parallel"]
