"""What the ways of sharing one generation's work over processes have in common (openwan.parallel.windows: a long
video's windows; openwan.parallel.cfg: the two passes of classifier-free guidance): the process group, this
process's place in it, and the counting of forwards over the processes, so a record counts the call's forwards as
one process's does."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Share:
    """The process group a generation's work is shared over, and this process's place in it."""

    group: Optional[dist.ProcessGroup]
    rank: int
    world: int

    def others(self, counts: dict) -> dict:
        """What the other processes counted (their forwards of a step, under the same keys as ``counts``, this
        process's), so that every process's record counts the call's forwards, as one process's does."""
        keys = sorted(counts)
        t = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64, device=collective_device(self.group))
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return {k: type(counts[k])(round(float(total) - float(counts[k]))) for k, total in zip(keys, t.cpu())}


def collective_device(group: Optional[dist.ProcessGroup]) -> torch.device:
    """Where a tensor for a collective of ``group`` has to be: the host for gloo, otherwise (nccl and the other
    accelerators' backends) this process's current accelerator device."""
    if dist.get_backend(group) == "gloo":
        return torch.device("cpu")
    acc = torch.accelerator.current_accelerator()
    if acc is None:
        raise RuntimeError(f"the process group's backend {dist.get_backend(group)!r} needs an accelerator and this "
                           f"process has none: create the group with gloo (openwan.parallel.init_process_group() "
                           f"does where there is no GPU)")
    return torch.device(acc.type, torch.accelerator.current_device_index())


def counted(stats: dict, share: Share, run):
    """``run()``'s result, with what the other processes counted meanwhile added into ``stats`` (a denoiser's
    forward counts, which ``run`` adds this process's to)."""
    before = {k: n for k, n in stats.items() if isinstance(n, (int, float))}
    out = run()
    for k, n in share.others({k: stats[k] - n for k, n in before.items()}).items():
        stats[k] += n
    return out


def process_group_needed(what: str, flag: str) -> RuntimeError:
    return RuntimeError(f"{what} needs torch.distributed: start with torchrun --nproc_per_node N (... {flag}) and "
                        f"call openwan.parallel.init_process_group() first")


__all__ = ["Share", "counted"]
