"""Serving from a torchrun group: N processes that split one model act as one worker.

    torchrun --nproc_per_node 4 -m openwan.cli serve --ckpt_dir ./Wan2.1-T2V-14B --ulysses_size 4 --dit_fsdp
    torchrun --nproc_per_node 2 -m openwan.cli serve --ckpt_dir ./Wan2.1-T2V-1.3B --window_parallel   # long videos

Process 0 runs the HTTP server and the queue with one ``GroupWorker``; the other processes run
``follow()``. For each job process 0 sends (job id, arguments, with the seed drawn once) to all; at
every denoising step it sends whether to go on, stop for a cancel or stop for shutdown, so every
process leaves the loop at the same step. Only process 0 decodes and writes. While idle it sends a
keep-alive every ``PING_S`` so the followers' collective never times out; at shutdown it sends None.
A job failing on one process only (e.g. out of memory on one GPU) cannot be recovered from: the
group must be restarted (the job is then re-run from the durable queue).
"""
from __future__ import annotations

import os
import random
import signal

from openwan.serve.workers import Cancelled, Stopping, Worker

PING_S = 60.0
GO, CANCEL, STOP = 0, 1, 2


def _broadcast(obj):
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def setup_group(ulysses_size: int, dit_fsdp: bool, window_parallel: bool = False, cfg_parallel: bool = False):
    """Join torchrun's group; (rank, world) or None when not started by torchrun with a group option."""
    from openwan.parallel.pipeline import check_group_modes
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not check_group_modes(world, ulysses_size, dit_fsdp, window_parallel, cfg_parallel, command="serve"):
        return None
    import torch.distributed as dist
    from openwan.parallel import init_process_group
    init_process_group()
    return dist.get_rank(), world


class GroupWorker(Worker):
    """Process 0's worker: every job and every step decision is mirrored to the followers."""

    def idle(self) -> None:
        with self.store.changed:
            self.store.changed.wait(PING_S)
        if not self.stopping.is_set():
            _broadcast(("ping",))

    def run(self) -> None:
        try:
            super().run()
        finally:
            _broadcast(None)                                         # the followers return

    def prepare(self, job_id: str, kw: dict) -> dict:
        if kw.get("seed") is None:
            kw["seed"] = random.randint(0, 2**31 - 1)                # one seed for every process
        _broadcast(("job", job_id, kw))
        return kw

    def step_flag(self, job_id: str) -> None:
        flag = STOP if self.stopping.is_set() else CANCEL if self.store.cancelled(job_id) else GO
        flag = _broadcast(flag)
        if flag == STOP:
            raise Stopping()
        if flag == CANCEL:
            raise Cancelled()


def follow(pipe) -> None:
    """Processes 1..N-1: run each job process 0 sends, to the same step, without writing anything."""
    import torch
    signal.signal(signal.SIGTERM, signal.SIG_IGN)                   # process 0 decides when the group ends
    while True:
        msg = _broadcast(None)
        if msg is None:
            return
        if msg[0] != "job":
            continue
        _, job_id, kw = msg
        kw = dict(kw)
        prompt = kw.pop("prompt")

        def on_step(i, t, x):
            if _broadcast(None) != GO:
                raise Stopping()

        try:
            with torch.inference_mode():
                pipe(prompt, output_type="latent", return_frames=False, callback=on_step, **kw)
        except Stopping:
            pass
        except Exception:  # noqa: BLE001 - the same inputs fail the same way on process 0, which reports it
            pass
