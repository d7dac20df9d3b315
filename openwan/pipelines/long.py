"""The ``continue`` long-video method: window after window, each conditioned on the previous one's last
latent frames without decoding them (see :mod:`openwan.long_video`).

Window k starts from its slice of the call's noise; the frames it shares with window k-1 are that window's
finished latents, re-imposed at the current noise level after every solver step (and at the start), with
the window's own noise draw, so at the end of the window they are exactly the known latents. A pipeline
with its own way (``pipe.continued_window``, TI2V: clean frames with timestep 0) replaces that. With
``job.long.expert`` the windows after the first run the checkpoint's continuation expert
(``Components.dit_continue``: the same DiT fine-tuned on continuing), the first the main DiT. A window
writes only its new frames: the ones it shares keep the previous window's latents (TI2V windows may be given
them noised, ``job.long.context_noise``).

With ``job.long.refine`` (a noise level in (0, 1)) the finished latent is then moved back to that noise level
(with noise of its own, drawn from the call's seed) and denoised to the end again by the ``windows`` method
(the main DiT on overlapping windows, predictions blended): the last part of the trajectory is one for the whole
video, so every seam of the continued windows is redrawn inside a window that straddles it (:func:`refine`).

Writing an output, the latent made so far is kept after each window and after the pass, and the steps of the window
or pass in progress, so the same call stopped part way goes on from there (:mod:`openwan.pipelines.resume`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import torch

from openwan.long_video import (
    noised,
    owners,
    refine_from,
    refine_plan,
    reimpose,
    window_conditions,
)
from openwan.pipelines.job import TimeLeft, add_stats, file_stats, refine_noise
from openwan.sampling import Step, timesteps_from_sigmas


def run_continued(pipe, job, on_step: Optional[Callable] = None,
                  cancelled: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """``pipe.run`` for a job whose long-video method is ``continue``: returns the whole clean latent."""
    plan = job.long.plan
    own = getattr(pipe, "continued_window", None)       # a task's own way (TI2V's: it places its pictures too)
    window = own or reimposed_window
    task_step = None if own else job.post_step          # the task's per-step conditioning (masked v2v), windowed
    if task_step is not None and not hasattr(task_step, "window"):
        raise ValueError("the 'continue' long-video method does not combine with this task's own per-step "
                         "conditioning: use long_method='windows'")
    given = job.given                   # extending a video: the plan starts at its carried latent frames
    carried = 0 if given is None else given.carried
    noise = job.start if given is None else job.start[:, given.start:]
    out = torch.zeros_like(noise, dtype=torch.float32)
    if given is not None:
        out[:, :carried] = given.latents[:, given.start:].float()
    from openwan.pipelines.resume import Partial, Progress
    kept = Progress.of(pipe, job)               # an earlier run's finished windows (writing an output)
    done = kept.load(out) if kept is not None else {"windows": 0}
    if done["windows"]:
        out[:, :done["latent"].shape[1]] = done["latent"]
        job.stats["resumed_windows"] = done["windows"]
    totals: dict = dict(done.get("stats", {}))
    expert = pipe.long_expert_dit("continue") if job.long.expert else None     # the later windows' DiT (None: main)
    n = len(job.sigmas) - 1
    n_pass, pass_units = pass_work(job)
    work = len(plan.spans) * n + n_pass * pass_units                 # in window forwards
    progress = overall(on_step, work)
    time_left = None
    if getattr(pipe, "progress", False):            # the bars' time left, over the windows and the pass
        time_left = TimeLeft(work)
        time_left.skip(done["windows"] * n + (n_pass * pass_units if done.get("refined") else 0))
    for k, (s, e) in enumerate(plan.spans):
        if k < done["windows"]:
            continue
        shared = plan.spans[k - 1][1] - s if k > 0 else carried
        start, cond, post_step = window(job, k, out[:, s:s + shared].clone(), noise[:, s:e])
        if task_step is not None:
            post_step = compose_steps(task_step.window(s, e), post_step)
        steps = None if kept is None else Partial(kept, k)
        latent, stats = run_window(pipe, job, start, cond, post_step, f"window {k + 1}/{len(plan.spans)}",
                                   expert if k > 0 or shared else None, progress(k * n), cancelled, time_left, steps)
        out[:, s + shared:e] = latent[:, shared:]                   # the shared frames stay
        add_stats(totals, stats)
        if kept is not None:
            kept.save(k + 1, out[:, :e], file_stats(totals))
    if job.long.refine and done.get("refined"):
        out = done["latent"].float()
    elif job.long.refine:
        steps = None if kept is None else Partial(kept, len(plan.spans))
        out, stats = refine(pipe, job, out, progress(len(plan.spans) * n, pass_units), cancelled, steps, time_left)
        add_stats(totals, stats)
        if kept is not None:            # a decode that fails (memory) is retried from here, with --tile say
            kept.save(len(plan.spans), out, file_stats(totals), refined=True)
    job.stats.update(totals)
    if given is not None:
        out = torch.cat([given.latents[:, :given.start].float(), out], dim=1)
    return out.to(noise.dtype)


def run_window(pipe, job, start: torch.Tensor, cond, post_step, label: str, dit=None,
               on_step: Optional[Callable] = None, cancelled: Optional[Callable[[], bool]] = None, time_left=None,
               steps_kept=None) -> tuple:
    """One window of a long video as a denoising run of its own: ``job``'s sampling from ``start`` with the window's
    conditioning and per-step conditioning, on ``dit`` (None: the main DiT). Returns (its clean latent, float32, its
    stats)."""
    sub = replace(job, settings={"stats": {}}, start=start, cond=cond, post_step=post_step, long=None,
                  window_conds=None, dit=dit, given=None, keeps_progress=False, steps_kept=steps_kept, label=label,
                  time_left=time_left, step_units=1)
    return pipe.run(sub, on_step, cancelled).float(), sub.settings["stats"]


def pass_work(job) -> tuple:
    """(the refinement pass's steps, the window forwards of one of its steps) of a long-video job; (0, 0) without
    a pass."""
    n_pass = len(job.sigmas) - 1 - refine_from(job.sigmas, job.long.refine) if job.long.refine else 0
    return n_pass, (len(refine_plan(job.long.plan).spans) if n_pass else 0)


def refine(pipe, job, latent: torch.Tensor, on_step: Optional[Callable] = None,
           cancelled: Optional[Callable[[], bool]] = None, steps_kept=None, time_left=None) -> tuple:
    """The refinement pass of a ``continue`` long video: ``latent`` (the finished windows) noised to the grid's first
    step at or below ``job.long.refine`` and denoised from there with the ``windows`` method over
    :func:`openwan.long_video.refine_plan` (each window with the prompt of the continued window its middle frame
    belongs to; the task's own per-step conditioning, e.g. TI2V's picture, kept), with the call's step cache (on the
    demo's default 30 steps it met the same targets as computing every step: docs/long_video_log.md). Returns the new
    clean latent (float32) and the pass's stats. ``steps_kept``: where its steps are kept (resume.Partial);
    ``time_left``: the call's (job.TimeLeft), counting each step of the pass as its plan's windows."""
    long = job.long
    i0 = refine_from(job.sigmas, long.refine)
    sigmas = job.sigmas[i0:]
    s0 = float(sigmas[0])
    fresh = refine_noise(latent.shape, int(job.settings.get("seed", 0)), latent.device)
    start = noised(latent.float(), fresh, s0).to(job.start.dtype)
    post_step, carried = job.post_step, 0 if job.given is None else job.given.carried
    if carried:                                 # an extension's source frames: re-imposed, ending exactly them
        known = latent[:, :carried].to(start.dtype)
        post_step = lambda step, x, x0: reimpose(x, known, fresh, step.sigma_next, carried)   # noqa: E731
    if post_step is not None:                   # the task's clean frames (TI2V's picture) as they stay
        t = timesteps_from_sigmas([s0]).to(start.device)
        start = post_step(Step(-1, len(sigmas) - 1, t, s0, s0), start, latent.to(start.dtype))
    plan = refine_plan(long.plan)
    conds = window_conditions(job.cond, plan, [job.window_conds[k].context for k in owners(long.plan, plan)])
    windows = replace(long, method="windows", plan=plan, prompts=None, expert=False, refine=0.0)
    sub = replace(job, settings={"stats": {}}, start=start, sigmas=sigmas, dit=None, post_step=post_step,
                  window_conds=conds, long=windows, given=None, label="refining", keeps_progress=False,
                  steps_kept=steps_kept, time_left=time_left, step_units=len(plan.spans))
    return pipe.run(sub, on_step, cancelled).float(), sub.settings["stats"]


def overall(on_step: Optional[Callable], total: int) -> Callable:
    """``progress(offset, units=1)``: ``on_step`` for one denoising run of several (a long video's windows, its
    refinement pass), its steps counted from ``offset`` in one count of ``total`` units of work, ``units`` a step
    (window forwards: a step of the pass runs all its windows), each step at the last unit it finishes, so progress
    read from them runs once from start to end, in step with the work; None without ``on_step``."""
    def progress(offset: int, units: int = 1) -> Optional[Callable]:
        if on_step is None:
            return None
        return lambda step, x, x0: on_step(replace(step, i=offset + (step.i + 1) * units - 1, n=total), x, x0)
    return progress


def compose_steps(first: Callable, then: Optional[Callable]) -> Callable:
    """One post-step of two: ``first`` (the task's), then ``then`` (the window's shared frames, which win)."""
    if then is None:
        return first
    return lambda step, x, x0: then(step, first(step, x, x0), x0)


def reimposed_window(job, k: int, known: torch.Tensor, window_noise: torch.Tensor):
    """Window ``k`` of the ``continue`` method: (start, conditioning, post_step), the ``known`` frames shared with
    the previous window re-imposed at the current noise level (at the start and after every step)."""
    shared = known.shape[1]

    def keep_known(step, x, x0):
        return reimpose(x, known, window_noise, step.sigma_next, shared)

    start = reimpose(window_noise, known, window_noise, float(job.sigmas[0]), shared)
    return start, job.window_conds[k], keep_known
