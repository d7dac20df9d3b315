"""The ``rolling`` long-video method: after the first window, the video's frames go through the DiT on a ladder of
noise levels (Rolling Diffusion, FIFO-Diffusion, Diffusion Forcing's pyramid), one latent frame finished at a time.

The first window is made as the ``continue`` method makes it (the main DiT, the task's pictures). From then on the
DiT sees windows of the native length: ``c`` finished latent frames (clean, timestep 0 on their tokens, as a
continued window's shared frames) and ``m`` = window - ``c`` frames still being made, the oldest nearly clean,
the newest nearly noise. Each frame goes down one grid of ``m * r`` steps (the sampler's shift) with a stepper of
the call's solver of its own (a multistep solver's history is the frame's: UniPC and DPM++ reuse the frame's earlier
x0 predictions, made beside other neighbours): frame j of the ladder (0 the oldest) at step (m - 1 - j) * r + q of
it, q = 0 .. r - 1. Every ``r`` steps the oldest
frame reaches 0 and joins the finished frames, and the next frame (its slice of the call's noise) joins the
ladder's end. So no frame is
drawn after a seam from frames that are already fixed: each is made beside its neighbours, a little further along
than the next, and the video has no seams at all. The ladder starts with its frames all at noise, each taken down
to its rung (``ramp``), and ends by running on past the video's last frame with frames of noise that are dropped.

The DiT must have learned per-frame noise levels (openwan.training.clean_frames ``rolling``; a checkpoint's rolling
expert, ``rolling_model/``); any TI2V-style model (timestep per token) runs it. Each step is one guided forward of one
window: the video's ``F - window`` frames after the first window cost about ``r`` forwards each, plus the ramp's
``(m - 1) r``.

Writing an output, the call keeps its progress (:class:`Kept`, openwan.pipelines.resume's files): the first window,
the frames the ladder has finished (a window's worth at a time), the ladder's state between them, and the pass's
steps, so the same call stopped part way goes on to the uninterrupted run's video, bit for bit.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import torch

from openwan.denoiser import Denoiser
from openwan.sampling import Step, euler_sigmas, make_solver, timesteps_from_sigmas


def ladder_grid(m: int, r: int, shift: float) -> torch.Tensor:
    """The grid every frame goes down: ``m * r`` steps evenly spaced before ``shift`` (the Euler grid; float64,
    ``m * r + 1`` values, 1 to 0)."""
    return euler_sigmas(m * r, shift).double()


def rungs(m: int, r: int) -> list[int]:
    """The grid step each ladder position holds once the ladder is built (oldest first): (m - 1 - j) * r."""
    return [(m - 1 - j) * r for j in range(m)]


def substeps_for(steps: int, m: int) -> int:
    """Steps per rung for a call of ``steps`` sampling steps: each frame then goes down about as many steps."""
    return max(1, round(steps / m))


class Ladder:
    """The frames being made: their latents ([C, 1, H, W] each, oldest first), their step on the grid and each its
    own stepper of the call's solver over the grid (a multistep solver's history is the frame's own)."""

    def __init__(self, grid: torch.Tensor, solver: str = "euler", generator: Optional[torch.Generator] = None):
        self.grid, self.solver, self.generator = grid, solver, generator
        self.frames, self.at, self.steppers = [], [], []

    def push(self, frame: torch.Tensor) -> None:
        self.frames.append(frame.float())
        self.at.append(0)
        self.steppers.append(make_solver(self.solver, self.grid, self.generator))

    def pop(self) -> torch.Tensor:
        self.at.pop(0)
        self.steppers.pop(0)
        return self.frames.pop(0)

    def sigmas(self) -> torch.Tensor:
        return self.grid[torch.tensor(self.at)]

    def step(self, v: torch.Tensor, move: list) -> None:
        """One step of each frame with ``move[j]`` (v: [C, len, H, W], the ladder's velocities)."""
        for j, go in enumerate(move):
            if go:
                self.frames[j] = self.steppers[j].step(v[:, j:j + 1].float(), self.frames[j], self.at[j])
                self.at[j] += 1

    def state(self) -> dict:
        """What the next steps depend on (the frames, their steps, their steppers' states), on the CPU."""
        return {"frames": torch.cat(self.frames, dim=1).detach().cpu().clone(), "at": list(self.at),
                "steppers": [st.state() for st in self.steppers]}

    def load(self, state: dict, device) -> None:
        """The ladder :meth:`state` returned."""
        self.frames = [f[:, None].to(device) for f in state["frames"].float().unbind(1)]
        self.at = list(state["at"])
        self.steppers = []
        for kept in state["steppers"]:
            self.steppers.append(make_solver(self.solver, self.grid, self.generator))
            self.steppers[-1].load(kept, device)


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
    start's dtype), with the refinement pass after it where ``job.long.refine`` asks for one. Writing an output, its
    progress is kept (:class:`Kept`), and the same call stopped part way goes on from there."""
    from openwan.pipelines.job import TimeLeft, add_stats, file_stats
    from openwan.pipelines.long import overall, pass_work, refine
    from openwan.pipelines.resume import Progress
    plan = job.long.plan
    _, m, r = ladder_shape(job)
    first = len(job.sigmas) - 1
    ladder_steps = ladder_forwards(m, r, plan.total, plan.length)
    n_pass, pass_units = pass_work(job)
    work = first + ladder_steps + n_pass * pass_units
    progress = overall(on_step, work)
    time_left = TimeLeft(work) if getattr(pipe, "progress", False) else None
    whole = Progress.of(pipe, job)
    kept = None if whole is None else Kept(whole, job.start)
    if kept is not None and kept.stage >= REFINED:              # an earlier run of this call finished everything
        job.stats.update(kept.stats, resumed_windows=1)
        return kept.latent.to(job.start.dtype)
    totals: dict = {}
    out = roll(pipe, job, pipe.long_expert_dit("rolling") if job.long.expert else None,
               progress=progress, cancelled=cancelled, time_left=time_left, stats=totals, kept=kept)
    if job.long.refine:
        out, stats = refine(pipe, job, out, progress(first + ladder_steps, pass_units), cancelled,
                            None if kept is None else kept.steps("pass"), time_left)
        add_stats(totals, stats)
        if kept is not None:
            kept.save(REFINED, out, file_stats(totals))
    job.stats.update(totals)
    return out.to(job.start.dtype)


FIRST, LADDER, REFINED = 1, 2, 3            # what a kept file has finished: the first window, the ladder, the pass


class Kept:
    """A ``rolling`` call's progress (openwan.pipelines.resume): in its progress file, the latent frames finished so
    far and the stage reached (:data:`FIRST`: the first window, and any ladder frames finished after it, kept once a
    window's worth of them is done; :data:`LADDER`; :data:`REFINED`), with the deterministic stats of the first window
    (of everything at the later stages); in its steps file, the ladder's state (the frames on it and their steps, the
    frames finished since the last write of the progress file, the generator of the frames past the end and the
    ladder's stats), or the steps of the first window or the pass in progress. Nothing else is needed to go on: the
    ladder after a kept state is the uninterrupted run's."""

    def __init__(self, whole, like: torch.Tensor):
        self.whole, self.like = whole, like
        found = whole.load(torch.zeros_like(like, dtype=torch.float32))
        self.stage = found["windows"] if found["windows"] in (FIRST, LADDER, REFINED) else 0
        self.latent = found.get("latent") if self.stage else None
        self.stats = dict(found.get("stats") or {}) if self.stage else {}

    def steps(self, run):
        """Where the steps of ``run`` ("first", "ladder", "pass") are kept: openwan.pipelines.resume.Partial."""
        from openwan.pipelines.resume import Partial
        return Partial(self.whole, f"rolling:{run}")

    def save(self, stage: int, latent: torch.Tensor, stats: dict) -> None:
        self.whole.save(stage, latent, stats, refined=stage == REFINED)

    def keep_ladder(self, state: dict) -> None:
        self.steps("ladder").keep({"ladder": state})

    def ladder(self, m: int, saved: int) -> Optional[dict]:
        """The kept ladder state that goes on from this file's finished frames (None: none, or not this one's)."""
        d = self.steps("ladder").kept()
        s = None if d is None else d.get("ladder")
        C, F, H, W = self.like.shape
        try:
            ok = (isinstance(s, dict) and s["chunk_from"] <= saved and s["done"] <= F
                  and tuple(s["chunk"].shape) == (C, s["done"] - s["chunk_from"], H, W)
                  and tuple(s["ladder"]["frames"].shape) == (C, m, H, W) and len(s["ladder"]["at"]) == m
                  and len(s["ladder"]["steppers"]) == m)
        except (KeyError, TypeError, AttributeError):
            ok = False
        return s if ok else None


def roll(pipe, job, dit=None, progress=None, cancelled=None, time_left=None,
         stats: Optional[dict] = None, kept: Optional[Kept] = None) -> torch.Tensor:
    """The first window and the ladder (no refinement pass): the clean latent, float32. ``dit``: the ladder's
    DiT (default the main); ``progress``: :func:`openwan.pipelines.long.overall`'s; ``stats`` gets the DiT
    forwards and the time; ``kept``: the call's progress (goes on from it, and keeps this run's)."""
    from openwan.pipelines.job import Cancelled, StepBar, add_stats, file_stats
    from openwan.pipelines.long import run_window
    from openwan.pipelines.resume import step_interval
    plan = job.long.plan
    window = plan.length
    c, m, r = ladder_shape(job)
    noise = job.start
    C, F, H, W = noise.shape
    steps = len(job.sigmas) - 1
    grid = ladder_grid(m, r, float(job.settings["sample_shift"]))
    out = torch.zeros_like(noise, dtype=torch.float32)
    stats = {} if stats is None else stats
    total = ladder_forwards(m, r, F, window)
    stats["rolling_substeps"] = r
    if kept is not None and kept.stage:                     # the first window (and more) made by an earlier run
        out[:, :kept.latent.shape[1]] = kept.latent
        add_stats(stats, kept.stats)
        job.stats["resumed_windows"] = 1
        if time_left is not None:
            time_left.skip(steps + (total if kept.stage == LADDER else 0))
        if kept.stage == LADDER:
            return out
    else:
        start, cond, post = pipe.continued_window(job, 0, noise[:, :0].clone(), noise[:, :window])
        label = f"first window ({window} of {F} latent frames)"
        out[:, :window], first_stats = run_window(pipe, job, start, cond, post, label,
                                                  on_step=None if progress is None else progress(0),
                                                  cancelled=cancelled, time_left=time_left,
                                                  steps_kept=None if kept is None else kept.steps("first"))
        add_stats(stats, first_stats)
        if kept is not None:
            kept.save(FIRST, out[:, :window], file_stats(stats))
    first_stats = file_stats(stats)
    dit = pipe.dit if dit is None else dit
    pt, ph, pw = dit.patch_size
    per_frame = (H // ph) * (W // pw)
    gen = torch.Generator().manual_seed(int(job.settings.get("seed", 0)) + 7919)    # the frames past the end
    ladder, nxt, done, count, saved = Ladder(grid, job.solver, gen), window, window, 0, window
    d = Denoiser(dit, job.window_conds[0], job.guidance)
    target = rungs(m, r)

    def enter():
        nonlocal nxt
        ladder.push(noise[:, nxt:nxt + 1] if nxt < F else torch.randn(C, 1, H, W, generator=gen).to(noise))
        nxt += 1

    state = None if kept is None or not kept.stage else kept.ladder(m, kept.latent.shape[1])
    if state is None:
        for _ in range(m):
            enter()
    else:                                                   # the ladder as an earlier run kept it
        done, nxt, count, saved = state["done"], state["nxt"], state["count"], state["chunk_from"]
        out[:, saved:done] = state["chunk"].to(out)
        ladder.load(state["ladder"], noise.device)
        gen.set_state(state["gen"])
        d.stats.update(state["stats"])
        job.stats["resumed_steps"] = count
        if time_left is not None:
            time_left.skip(count)
    resumed = count
    on_step = None if progress is None else progress(steps)
    bar = StepBar(total - resumed, "rolling", time_left) if getattr(pipe, "progress", False) else None
    every, last = step_interval(), time.monotonic()

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
            bar.update(count - resumed)
        if on_step is not None:             # the progress of the ladder, at its newest frame's timestep
            on_step(Step(count - 1, total, frame_t[-1:].to(noise.device), float(sig.max()), float(sig.min())), x, x)

    def keep(now: bool) -> None:
        nonlocal last
        if kept is None or done >= F or not (now or time.monotonic() - last >= every):
            return
        kept.keep_ladder({"done": done, "nxt": nxt, "count": count, "ladder": ladder.state(), "chunk_from": saved,
                          "chunk": out[:, saved:done].cpu().clone(), "gen": gen.get_state(),
                          "stats": file_stats(d.stats)})
        last = time.monotonic()

    t1 = time.perf_counter()
    try:
        with pipe.resident(dit), torch.inference_mode():
            while done < F:                 # the ramp (each frame down to its rung), then every frame a step on
                forward([a < b for a, b in zip(ladder.at, target)] if count < target[0] else [True] * m)
                if ladder.at[0] == m * r:
                    out[:, done:done + 1] = ladder.pop()
                    done += 1
                    enter()
                if kept is not None and done - saved >= window and done < F:
                    kept.save(FIRST, out[:, :done], first_stats)    # a window's worth of finished frames, once
                    saved = done
                    keep(True)
                else:
                    keep(False)
    finally:
        if bar is not None:
            bar.close()
    add_stats(stats, {"denoise": round(time.perf_counter() - t1, 4), **d.stats})
    if kept is not None:
        kept.save(LADDER, out, file_stats(stats))
    return out
