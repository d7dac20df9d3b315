"""Multi-process inference for a whole pipeline: every DiT it runs (Wan 2.2 A14B: both experts).

    parallelize(pipe, ulysses_size=N, dit_fsdp=True)    # under torchrun --nproc_per_node N

Sequence parallel (``ulysses_size`` = the process count) attaches to each expert; an expert that moves
between the device and the CPU for the active-expert plan keeps it (its attributes travel with it).

Sharded weights (``dit_fsdp``) and the active-expert plan: an FSDP2-sharded module's parameters are
DTensor shards on the process group's device (its all-gathers run on the mesh's device type), gathered
block by block in the forward. Moving them to the CPU and back at every switch would fight FSDP2's own
placement and buys nothing: with ``dit_fsdp`` both experts stay in place, each sharded: a process holds
1/N of each, 2/N of one expert in all, plus one gathered block while it runs, which for N >= 2 is no
more than the single unsharded expert the active-expert plan keeps. The pipeline's ``pin_experts``
records this (``experts_plan`` becomes "both"); an expert released on the CPU is reloaded first.
"""
from __future__ import annotations

from typing import Optional


def pipeline_dits(pipe) -> dict:
    """{name: DiT} of a pipeline: its experts (Wan 2.2 A14B) or its one DiT."""
    return dict(getattr(pipe, "experts", None) or {"dit": pipe.dit})


def check_whole_pass_mode(world: Optional[int], ulysses_size: Optional[int], dit_fsdp: bool, window_parallel: bool,
                          cfg_parallel: bool, command: str = "generate") -> None:
    """The checks of window / CFG parallel against the process count ``world`` and the other modes (the CLI's, the
    server's and :func:`parallelize`'s): each gives every process whole DiT passes on its own DiT, so it goes alone;
    CFG parallel takes exactly two processes, window parallel several (``world`` None: not checked). A ``ValueError``
    naming the fix otherwise."""
    if not (window_parallel or cfg_parallel):
        return
    flag = "--window_parallel" if window_parallel else "--cfg_parallel"
    if (ulysses_size or 1) > 1 or dit_fsdp or (window_parallel and cfg_parallel):
        other = "--cfg_parallel" if window_parallel and cfg_parallel else "--ulysses_size or --dit_fsdp"
        raise ValueError(f"{flag} gives each process whole DiT passes to run on its own DiT; it goes alone, not with "
                         f"{other}: give one of them")
    if world is not None and (world == 1 or (cfg_parallel and world != 2)):
        n = "2" if cfg_parallel else "N"
        raise ValueError(f"{flag} shares the work over {'two' if cfg_parallel else 'several'} processes (this is "
                         f"{world}): start with torchrun --nproc_per_node {n} -m openwan.cli {command} ... {flag}")


def check_group_modes(world: int, ulysses_size: Optional[int], dit_fsdp: bool, window_parallel: bool = False,
                      cfg_parallel: bool = False, command: str = "generate") -> bool:
    """The checks of the process-group options against the process count ``world`` (torchrun's), the CLI's and the
    server's: True when the run is a group (join it), False for one process. A ``ValueError`` naming the fix for
    a size that is not the process count, sharding without processes to shard over, or processes without a mode."""
    size = 1 if ulysses_size is None else ulysses_size
    if size < 1:
        raise ValueError(f"--ulysses_size must be >= 1, got {size}")
    if window_parallel or cfg_parallel:
        check_whole_pass_mode(world, size, dit_fsdp, window_parallel, cfg_parallel, command)
        return True
    if size == 1 and world == 1 and not dit_fsdp:
        return False
    if size not in (1, world):
        raise ValueError(f"--ulysses_size {size} must equal the number of processes ({world}); start with "
                         f"torchrun --nproc_per_node {size} -m openwan.cli {command} ... --ulysses_size {size}")
    if world == 1:
        raise ValueError(f"--dit_fsdp shards the DiT over several processes: start with torchrun --nproc_per_node N "
                         f"-m openwan.cli {command} ... --dit_fsdp (with --ulysses_size N to split the work too)")
    if size == 1 and not dit_fsdp:
        raise ValueError(f"running as {world} processes needs --ulysses_size {world} (split each video's tokens) "
                         f"and/or --dit_fsdp (shard the DiT's weights), or --window_parallel (share a long video's "
                         f"windows), or with 2 processes --cfg_parallel (one guidance pass each)")
    return True


def parallelize(pipe, ulysses_size: Optional[int] = None, dit_fsdp: bool = False, window_parallel: bool = False,
                cfg_parallel: bool = False) -> None:
    """Shard every DiT of ``pipe`` (``dit_fsdp``) and/or split its tokens over the processes (``ulysses_size`` >
    1, the process count), or share a long video's windows over them (``window_parallel``: openwan.parallel.windows),
    or the two passes of guidance over two (``cfg_parallel``: openwan.parallel.cfg), each alone; needs the process
    group (:func:`openwan.parallel.init_process_group`)."""
    from openwan.parallel.sequence import enable_sequence_parallel
    from openwan.parallel.shard import shard_dit
    if window_parallel or cfg_parallel:
        import torch.distributed as dist
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else None   # (enable_*: no
        check_whole_pass_mode(world, ulysses_size, dit_fsdp, window_parallel, cfg_parallel)      # group, an error)
        if window_parallel:
            from openwan.parallel.windows import enable_window_parallel
            enable_window_parallel(pipe)
        else:
            from openwan.parallel.cfg import enable_cfg_parallel
            enable_cfg_parallel(pipe)
        return
    if dit_fsdp:
        pin = getattr(pipe, "pin_experts", None)
        if pin is not None:
            pin("sharded over the processes (--dit_fsdp): both experts stay in place")
        for dit in pipeline_dits(pipe).values():
            shard_dit(dit, pipe.device)
    if (ulysses_size or 1) > 1:
        for dit in pipeline_dits(pipe).values():
            enable_sequence_parallel(dit)


__all__ = ["check_whole_pass_mode", "parallelize", "pipeline_dits"]
