"""Window parallel inference for long videos, on torch.distributed.

A long video made by the ``windows`` method (openwan.long_video) runs every window of the plan through the DiT at
every step and blends their velocities. The windows of one step are independent of each other, so N processes can
share them: process r runs the windows i with i % N == r, and one all_gather gives every process every window's
weighted velocity, which each adds up in window order, as one process does:

    step:  c_i = w_i * model(i, x[window i])         on the process that owns window i (no communication)
           all_gather(c)                               (every window's c_i on every process)
           v[window i] += c_i, for i = 0, 1, ...       (the one-process blend, the same additions in the same order)

so the video is one process's, bit for bit, and every process holds the whole DiT and runs about 1/N of the
forwards; the sampler, guidance and noise (the same seed everywhere) then run identically on all of them, as under
sequence parallel (openwan.parallel.sequence), and process 0 alone decodes and writes. The communication is every
window's velocity once a step, about (window / stride) latents (twice the latent at the default half-window overlap:
480p, 161 frames, 32 MB of float32 a step), against N DiT forwards saved.

It splits what runs as windows: the ``windows`` method, and the ``continue`` method's refinement pass; a
``continue`` window, or a video of the native length, is one DiT call that every process makes whole (no speed-up;
a warning says so).

    init_process_group()                   # under torchrun
    enable_window_parallel(pipe)           # pipe.window_share: the pipeline's windowed runs share their windows
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from openwan.parallel.share import Share, process_group_needed


@dataclass(frozen=True)
class WindowShare(Share):
    """The process group the windows are shared over, and this process's place in it."""

    def owns(self, window: int) -> bool:
        """Whether this process runs window ``window`` (round robin)."""
        return window % self.world == self.rank

    def gather(self, mine: dict, count: int, like: torch.Tensor) -> list:
        """Every window's tensor on every process: ``mine`` {window: tensor shaped like ``like``} this process's,
        ``count`` windows in all; returns them in window order."""
        per = -(-count // self.world)
        buf = torch.zeros((per, *like.shape), dtype=like.dtype, device=like.device)
        for i, t in mine.items():
            buf[i // self.world] = t
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf, group=self.group)
        return [parts[i % self.world][i // self.world] for i in range(count)]


def enable_window_parallel(pipe, group: Optional[dist.ProcessGroup] = None) -> Optional[WindowShare]:
    """Share the windows of ``pipe``'s long videos over the processes of ``group`` (default: all): sets and returns
    ``pipe.window_share`` (None with one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise process_group_needed("window parallel", "--window_parallel")
    world = dist.get_world_size(group)
    pipe.window_share = WindowShare(group, dist.get_rank(group), world) if world > 1 else None
    return pipe.window_share


__all__ = ["WindowShare", "enable_window_parallel"]
