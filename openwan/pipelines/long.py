"""The ``continue`` long-video method: window after window, each conditioned on the previous one's last
latent frames without decoding them (see :mod:`openwan.long_video`).

Window k starts from its slice of the call's noise; the frames it shares with window k-1 are that window's
finished latents, re-imposed at the current noise level after every solver step (and at the start), with
the window's own noise draw, so at the end of the window they are exactly the known latents.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import torch

from openwan.long_video import reimpose


def run_continued(pipe, job, on_step: Optional[Callable] = None,
                  cancelled: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """``pipe.run`` for a job whose long-video method is ``continue``: returns the whole clean latent."""
    if job.post_step is not None:
        raise ValueError("the 'continue' long-video method does not combine with this task's own per-step "
                         "conditioning: use long_method='windows'")
    plan = job.long.plan
    noise = job.start
    out = torch.zeros_like(noise, dtype=torch.float32)
    totals: dict = {}
    for k, (s, e) in enumerate(plan.spans):
        shared = plan.spans[k - 1][1] - s if k > 0 else 0
        window_noise = noise[:, s:e]
        known = out[:, s:s + shared].clone()

        def keep_known(step, x, x0, known=known, window_noise=window_noise, shared=shared):
            return reimpose(x, known, window_noise, step.sigma_next, shared)

        start = reimpose(window_noise, known, window_noise, float(job.sigmas[0]), shared)
        sub = replace(job, settings={"stats": {}}, start=start, cond=job.window_conds[k], post_step=keep_known,
                      long=None, window_conds=None)
        out[:, s:e] = pipe.run(sub, on_step, cancelled).float()
        for key, v in sub.settings["stats"].items():
            totals[key] = round(totals.get(key, 0) + v, 4) if isinstance(v, float) else totals.get(key, 0) + v
    job.stats.update(totals)
    return out.to(noise.dtype)
