"""The ``rolling`` long-video method: after the first window, the video's frames go through the DiT on a ladder of
noise levels (Rolling Diffusion, FIFO-Diffusion, Diffusion Forcing's pyramid), one latent frame finished at a time.

The first window is made as the ``continue`` method makes it (the main DiT, the task's pictures). From then on the
DiT sees windows of the native length: ``c`` finished latent frames (clean, timestep 0 on their tokens, as a
continued window's shared frames) and ``m`` = window - ``c`` frames still being made, the oldest nearly clean,
the newest nearly noise. Each frame goes down one grid of ``m * r`` Euler steps (the sampler's shift): frame j
of the ladder (0 the oldest) at step (m - 1 - j) * r + q of it, q = 0 .. r - 1. Every ``r`` steps the oldest
frame reaches 0 and joins the finished frames, and the next frame (its slice of the call's noise) joins the
ladder's end. So no frame is
drawn after a seam from frames that are already fixed: each is made beside its neighbours, a little further along
than the next, and the video has no seams at all. The ladder starts with its frames all at noise, each taken down
to its rung (``ramp``), and ends by running on past the video's last frame with frames of noise that are dropped.

The DiT must have learned per-frame noise levels (openwan.training.clean_frames ``rolling``; a checkpoint's rolling
expert, ``rolling_model/``); any TI2V-style model (timestep per token) runs it. Each step is one guided forward of one
window: the video's ``F - window`` frames after the first window cost about ``r`` forwards each, plus the ramp's
``(m - 1) r``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import torch

from openwan.denoiser import Denoiser
from openwan.sampling import Step, euler_sigmas, timesteps_from_sigmas


def ladder_grid(m: int, r: int, shift: float) -> torch.Tensor:
    """The grid every frame goes down: ``m * r`` Euler steps at ``shift`` (float64, ``m * r + 1`` values, 1 to 0)."""
    return euler_sigmas(m * r, shift).double()


def rungs(m: int, r: int) -> list[int]:
    """The grid step each ladder position holds once the ladder is built (oldest first): (m - 1 - j) * r."""
    return [(m - 1 - j) * r for j in range(m)]


def substeps_for(steps: int, m: int) -> int:
    """Steps per rung for a call of ``steps`` sampling steps: each frame then goes down about as many steps."""
    return max(1, round(steps / m))


class Ladder:
    """The frames being made: their latents ([C, 1, H, W] each, oldest first) and their step on the grid."""

    def __init__(self, grid: torch.Tensor):
        self.grid, self.frames, self.at = grid, [], []

    def push(self, frame: torch.Tensor) -> None:
        self.frames.append(frame.float())
        self.at.append(0)

    def pop(self) -> torch.Tensor:
        self.at.pop(0)
        return self.frames.pop(0)

    def sigmas(self) -> torch.Tensor:
        return self.grid[torch.tensor(self.at)]

    def step(self, v: torch.Tensor, move: list) -> None:
        """One Euler step of each frame with ``move[j]`` (v: [C, len, H, W], the ladder's velocities)."""
        for j, go in enumerate(move):
            if go:
                i = self.at[j]
                self.frames[j] = self.frames[j] + float(self.grid[i + 1] - self.grid[i]) * v[:, j:j + 1].float()
                self.at[j] = i + 1


def ladder_forwards(m: int, r: int, frames: int, window: int) -> int:
    """The ladder's DiT forwards: ``frames - window`` frames of ``r`` forwards each, after a ramp of ``(m - 1) r``."""
    return (m - 1) * r + (frames - window) * r


def ladder_shape(job) -> tuple:
    """(c, m, r) of a ``rolling`` job: the finished frames a window carries (the plan's overlap), the ladder's
    frames (the rest of the window) and its steps a rung (from the call's steps)."""
    plan = job.long.plan
    m = plan.length - plan.overlap
    return plan.overlap, m, substeps_for(len(job.sigmas) - 1, m)


def run_rolling(pipe, job, on_step: Optional[Callable] = None,
                cancelled: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """``pipe.run`` for a job whose long-video method is ``rolling``: the whole clean latent (float32 values in the
    start's dtype), with the refinement pass after it where ``job.long.refine`` asks for one."""
    from openwan.pipelines.job import TimeLeft, add_stats
    from openwan.pipelines.long import overall, pass_work, refine
    plan = job.long.plan
    _, m, r = ladder_shape(job)
    first = len(job.sigmas) - 1
    ladder_steps = ladder_forwards(m, r, plan.total, plan.length)
    n_pass, pass_units = pass_work(job)
    work = first + ladder_steps + n_pass * pass_units
    progress = overall(on_step, work)
    time_left = TimeLeft(work) if getattr(pipe, "progress", False) else None
    totals: dict = {}
    out = roll(pipe, job, pipe.long_expert_dit("rolling") if job.long.expert else None,
               progress=progress, cancelled=cancelled, time_left=time_left, stats=totals)
    if job.long.refine:
        out, stats = refine(pipe, job, out, progress(first + ladder_steps, pass_units), cancelled, None, time_left)
        add_stats(totals, stats)
    job.stats.update(totals)
    return out.to(job.start.dtype)


def roll(pipe, job, dit=None, progress=None, cancelled=None, time_left=None,
         stats: Optional[dict] = None) -> torch.Tensor:
    """The first window and the ladder (no refinement pass): the clean latent, float32. ``dit``: the ladder's
    DiT (default the main); ``progress``: :func:`openwan.pipelines.long.overall`'s; ``stats`` gets the DiT
    forwards and the time."""
    from openwan.pipelines.job import Cancelled, StepBar, add_stats
    from openwan.pipelines.long import run_window
    plan = job.long.plan
    window = plan.length
    c, m, r = ladder_shape(job)
    noise = job.start
    C, F, H, W = noise.shape
    steps = len(job.sigmas) - 1
    grid = ladder_grid(m, r, float(job.settings["sample_shift"]))
    out = torch.zeros_like(noise, dtype=torch.float32)
    stats = {} if stats is None else stats
    start, cond, post = pipe.continued_window(job, 0, noise[:, :0].clone(), noise[:, :window])
    out[:, :window], first_stats = run_window(pipe, job, start, cond, post, f"window 1 ({F} latent frames)",
                                              on_step=None if progress is None else progress(0),
                                              cancelled=cancelled, time_left=time_left)
    add_stats(stats, first_stats)
    dit = pipe.dit if dit is None else dit
    pt, ph, pw = dit.patch_size
    per_frame = (H // ph) * (W // pw)
    gen = torch.Generator().manual_seed(int(job.settings.get("seed", 0)) + 7919)    # the frames past the end
    ladder, nxt, done = Ladder(grid), window, window
    d = Denoiser(dit, job.window_conds[0], job.guidance)
    total = ladder_forwards(m, r, F, window)
    on_step = None if progress is None else progress(steps)
    bar = StepBar(total, "rolling", time_left) if getattr(pipe, "progress", False) else None
    count = 0

    def enter():
        nonlocal nxt
        ladder.push(noise[:, nxt:nxt + 1] if nxt < F else torch.randn(C, 1, H, W, generator=gen).to(noise))
        nxt += 1

    def forward(move):
        nonlocal count
        if cancelled is not None and cancelled():
            raise Cancelled("generation cancelled")
        sig = torch.cat([torch.zeros(c, dtype=torch.float64), ladder.sigmas()])
        frame_t = timesteps_from_sigmas(sig).clamp(max=999)       # as training draws them: [0, 999]
        t = frame_t.repeat_interleave(per_frame)[None].to(noise.device)
        k = next(i for i, (s, e) in enumerate(plan.spans) if s <= done < e or i == len(plan.spans) - 1)
        d.cond = dataclasses.replace(job.window_conds[k], first_frame=None, last_frame=None)
        x = torch.cat([out[:, done - c:done]] + ladder.frames, dim=1).to(noise.dtype)
        v = d(x, Step(count, total, t, float(sig.max()), float(sig.min())))[:, c:]
        ladder.step(v, move)
        count += 1
        if bar is not None:
            bar.update(count)
        if on_step is not None:             # the progress of the ladder, at its newest frame's timestep
            on_step(Step(count - 1, total, frame_t[-1:].to(noise.device), float(sig.max()), float(sig.min())), x, x)

    t1 = time.perf_counter()
    try:
        with pipe.resident(dit), torch.inference_mode():
            for _ in range(m):
                enter()
            target = rungs(m, r)
            for _ in range(target[0]):                        # the ramp: each frame down to its rung
                forward([a < b for a, b in zip(ladder.at, target)])
            while done < F:
                while ladder.at[0] < m * r:
                    forward([True] * m)
                out[:, done:done + 1] = ladder.pop()
                done += 1
                enter()
    finally:
        if bar is not None:
            bar.close()
    add_stats(stats, {"denoise": round(time.perf_counter() - t1, 4), **d.stats})
    stats["rolling_substeps"] = r
    return out
