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
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import torch

from openwan.long_video import reimpose


def run_continued(pipe, job, on_step: Optional[Callable] = None,
                  cancelled: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """``pipe.run`` for a job whose long-video method is ``continue``: returns the whole clean latent."""
    plan = job.long.plan
    noise = job.start
    out = torch.zeros_like(noise, dtype=torch.float32)
    totals: dict = {}
    own = getattr(pipe, "continued_window", None)       # a task's own way (TI2V's: it places its pictures too)
    window = own or reimposed_window
    task_step = None if own else job.post_step          # the task's per-step conditioning (masked v2v), windowed
    if task_step is not None and not hasattr(task_step, "window"):
        raise ValueError("the 'continue' long-video method does not combine with this task's own per-step "
                         "conditioning: use long_method='windows'")
    expert = pipe.c.dit_continue if job.long.expert else None       # the later windows' DiT (None: the main)
    for k, (s, e) in enumerate(plan.spans):
        shared = plan.spans[k - 1][1] - s if k > 0 else 0
        start, cond, post_step = window(job, k, out[:, s:s + shared].clone(), noise[:, s:e])
        if task_step is not None:
            post_step = compose_steps(task_step.window(s, e), post_step)
        sub = replace(job, settings={"stats": {}}, start=start, cond=cond, post_step=post_step,
                      long=None, window_conds=None, dit=expert if k > 0 else None)
        out[:, s + shared:e] = pipe.run(sub, on_step, cancelled)[:, shared:].float()   # the shared frames stay
        for key, v in sub.settings["stats"].items():
            totals[key] = round(totals.get(key, 0) + v, 4) if isinstance(v, float) else totals.get(key, 0) + v
    job.stats.update(totals)
    return out.to(noise.dtype)


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
