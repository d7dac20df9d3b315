"""Long video: videos past the model's native length, in bounded memory.

Three ways, all in latent space (no decode / re-encode between windows, the cause of colour drift elsewhere):

- ``windows``: one long latent, denoised by overlapping windows of the native length at every step. The DiT
  sees one window at a time; where windows overlap their velocity predictions are blended with weights that
  ramp linearly across the overlap, so every frame's weights sum to 1. The whole video shares one sampling
  trajectory and is decoded once, streaming.
- ``continue``: window after window; each new window's first ``overlap`` latent frames are the last ones of
  the previous window, re-imposed at the current noise level after every solver step (inpainting style:
  ``(1 - sigma) * known + sigma * noise``, the flow-matching forward process with a fixed noise draw).
- ``rolling``: the first window as ``continue`` makes it, then the frames on a ladder of noise levels, one finished
  at a time (openwan.pipelines.rolling; TI2V-style models trained for it).

Everything here is a pure function of tensors and counts; the pipelines wire it into the model call.
Counts are latent frames: ``(frame_num - 1) // 4 + 1`` for the Wan VAEs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import torch

from openwan.denoiser import Wrapper
from openwan.sampling import add_noise

METHODS = ("windows", "continue", "rolling")
DEFAULT_METHOD = "windows"


class LongVideoError(ValueError):
    """Bad long-video settings (the message names the setting and the fix)."""


@dataclass(frozen=True)
class WindowPlan:
    """Overlapping temporal windows over ``total`` latent frames: ``spans`` = [(start, end)), in order."""
    total: int
    length: int
    overlap: int
    spans: tuple

    def settings(self) -> dict:
        return {"latent_frames": self.total, "window": self.length, "overlap": self.overlap,
                "windows": len(self.spans)}


def plan_windows(total: int, length: int, overlap: int) -> WindowPlan:
    """Windows of ``length`` latent frames sharing ``overlap`` frames with the next, covering ``total`` frames.

    The last window is moved back to end exactly at ``total`` (so it may share more than ``overlap`` frames
    with the one before); a video no longer than one window is one window.
    """
    for name, v in (("total", total), ("window", length)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LongVideoError(f"{name} must be a positive number of latent frames, got {v!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise LongVideoError(f"overlap must be an integer >= 0 latent frames, got {overlap!r}")
    if overlap >= length:
        raise LongVideoError(f"overlap ({overlap}) must be smaller than the window ({length} latent frames): "
                             f"lower --long_overlap")
    if total <= length:
        return WindowPlan(total, total, 0, ((0, total),))
    stride = length - overlap
    starts = list(range(0, total - length, stride)) + [total - length]
    return WindowPlan(total, length, overlap, tuple((s, s + length) for s in starts))


def blend_weights(plan: WindowPlan) -> torch.Tensor:
    """[windows, total] float32 weights: within each window 1 except linear ramps over the frames it shares
    with its neighbours, normalised so that every frame's weights sum to exactly 1 over the windows."""
    w = torch.zeros(len(plan.spans), plan.total, dtype=torch.float64)
    for i, (s, e) in enumerate(plan.spans):
        ramp = torch.ones(e - s, dtype=torch.float64)
        if i > 0:                                           # fade in over the frames shared with the previous
            shared = plan.spans[i - 1][1] - s
            ramp[:shared] = torch.arange(1, shared + 1, dtype=torch.float64) / (shared + 1)
        if i + 1 < len(plan.spans):                         # fade out over the frames shared with the next
            shared = e - plan.spans[i + 1][0]
            ramp[e - s - shared:] = torch.minimum(ramp[e - s - shared:],
                                                  torch.arange(shared, 0, -1, dtype=torch.float64) / (shared + 1))
        w[i, s:e] = ramp
    return (w / w.sum(0, keepdim=True)).float()


def schedule_text(prompts: Sequence) -> str:
    """A prompt schedule given as a list (the API's and the server's form) as the ``"A | B"`` text the pipeline
    reads and records, each part checked: a non-empty string without ``|`` of its own."""
    parts = list(prompts)
    if not parts:
        raise LongVideoError("the prompt is an empty list: give a string, or a list of one prompt per part of the "
                             "video (a schedule)")
    for i, p in enumerate(parts):
        if not isinstance(p, str) or not p.strip():
            raise LongVideoError(f"prompt part {i} is {p!r:.40}: every part of a prompt schedule must be a "
                                 f"non-empty string")
        if "|" in p:
            raise LongVideoError(f"prompt part {i} ({p!r:.60}) holds a '|': give each part as its own list item, "
                                 f"or the whole schedule as one string \"A | B\"")
    return " | ".join(p.strip() for p in parts)


def split_prompts(prompt: Union[str, Sequence[str]], windows: int) -> list[str]:
    """A prompt schedule -> one prompt per window. ``"a | b"`` (or a list) spreads the segments evenly over the
    windows in order (with more segments than windows, the extra ones are refused)."""
    segments = [p.strip() for p in (prompt.split("|") if isinstance(prompt, str) else prompt)]
    if not segments or any(not isinstance(p, str) or not p for p in segments):
        raise LongVideoError(f"empty prompt segment in {prompt!r}: every part between '|' needs text")
    if len(segments) > windows:
        raise LongVideoError(f"{len(segments)} prompt segments for {windows} window(s): give at most one segment "
                             f"per window, or a longer --frame_num")
    return [segments[w * len(segments) // windows] for w in range(windows)]


def noised(known: torch.Tensor, noise: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
    """The flow-matching forward process: known latents at noise level ``sigma``."""
    return (1 - sigma) * known + sigma * noise


def reimpose(x: torch.Tensor, known: torch.Tensor, noise: torch.Tensor, sigma, frames: int) -> torch.Tensor:
    """``x`` [C, F, H, W] with its first ``frames`` latent frames replaced by ``known`` noised to ``sigma``."""
    if frames == 0:
        return x
    out = x.clone()
    out[:, :frames] = noised(known[:, :frames].to(x.dtype), noise[:, :frames].to(x.dtype), sigma)
    return out


@dataclass(frozen=True)
class KeepLatents:
    """A task's per-step conditioning as data: after each solver step the cells outside ``mask`` (1 = generated,
    0 = kept; broadcast over ``known``) are ``known`` at the step's next noise level with ``noise`` (masked
    video-to-video: the source's latents, ending exactly them). :meth:`window` is the same on latent frames
    [s, e): what lets the ``continue`` long-video method carry it window by window."""
    known: torch.Tensor
    mask: torch.Tensor
    noise: torch.Tensor

    def __call__(self, step, x: torch.Tensor, x0_pred=None) -> torch.Tensor:
        return self.mask * x + (1 - self.mask) * add_noise(self.known, self.noise, step.sigma_next).to(x.dtype)

    def window(self, s: int, e: int) -> "KeepLatents":
        return KeepLatents(self.known[:, s:e], self.mask[:, s:e], self.noise[:, s:e])


def latent_frames(frame_num: int, temporal_ratio: int = 4) -> int:
    return (frame_num - 1) // temporal_ratio + 1


def windowed_velocity(model, x: torch.Tensor, plan: WindowPlan, weights: Optional[torch.Tensor] = None,
                      window_model=None, share=None) -> torch.Tensor:
    """Blend ``model(window_index, x[:, s:e]) -> v`` over the plan's windows into one velocity for all of x. With
    ``share`` (openwan.parallel.windows.WindowShare: several processes) this process runs the windows it ``owns``,
    ``share.gather`` brings every window's weighted velocity, and they are added in the same order."""
    weights = blend_weights(plan) if weights is None else weights
    v = torch.zeros_like(x, dtype=torch.float32)

    def weighted(i, s, e):
        vi = model(i, x[:, s:e]).float()
        return vi * weights[i, s:e].to(vi.device).view(1, -1, *([1] * (x.dim() - 2)))
    if share is None:
        for i, (s, e) in enumerate(plan.spans):
            v[:, s:e] += weighted(i, s, e)
        return v
    if len({e - s for s, e in plan.spans}) != 1:
        raise ValueError(f"window parallel needs windows of one length, got the spans {plan.spans}")
    mine = {i: weighted(i, s, e) for i, (s, e) in enumerate(plan.spans) if share.owns(i)}
    s0, e0 = plan.spans[0]
    terms = share.gather(mine, len(plan.spans), v[:, s0:e0])
    for (s, e), term in zip(plan.spans, terms):
        v[:, s:e] += term
    return v


# ----------------------------------------------------------------------------- in the pipelines

@dataclass(frozen=True)
class LongVideo:
    """A call's long-video settings: the method, its window plan, and the prompt of each window."""
    method: str
    plan: WindowPlan
    prompts: Optional[tuple] = None      # one per window when the prompt is a schedule ("a | b")
    expert: bool = False                 # after the first window, the continuation (rolling: rolling) expert
    context_noise: float = 0.0           # continue (TI2V): the carried frames' noise level and timestep
    refine: float = 0.0                  # continue / rolling: a windows pass over the whole latent from this level

    def settings(self) -> dict:
        d = {"method": self.method, **self.plan.settings()}
        if self.prompts:
            d["prompts"] = list(self.prompts)
        if self.expert:
            d["expert"] = True
        if self.context_noise:
            d["context_noise"] = self.context_noise
        if self.refine:
            d["refine"] = self.refine
        return d


def refine_from(sigmas: torch.Tensor, level: float) -> int:
    """The step a refinement pass from noise level ``level`` starts at: the first of the grid's steps whose sigma is
    at most ``level`` (its last step, to 0, when none is)."""
    n = len(sigmas) - 1
    return next((i for i in range(n) if float(sigmas[i]) <= level), n - 1)


def refine_plan(plan: WindowPlan) -> WindowPlan:
    """The ``windows`` plan a ``continue`` video's refinement pass runs: the same window length at the
    ``windows`` method's overlap (half the window), so every seam of ``plan`` lies inside a window."""
    return plan_windows(plan.total, plan.length, default_overlap(plan.length))


def owners(plan: WindowPlan, of: WindowPlan) -> list[int]:
    """For each window of ``of``, the index of the window of ``plan`` its middle latent frame belongs to (the
    first that holds it): whose prompt a refinement window takes under a prompt schedule."""
    return [next(k for k, (s, e) in enumerate(plan.spans) if s <= (a + b) // 2 < e) for a, b in of.spans]


def default_overlap(window: int) -> int:
    """Half the window, rounded up (11 of Wan's 21 latent frames, 3 of the demo's 5). Measured on the demo
    (docs/long_video_log.md, v1): with 1 shared frame of 5 the moving object snapped back at every
    seam (largest seam jump 29.9 px), with 3 it travelled on (4.0 px), at ~1.9x the DiT forwards."""
    return max(1, (window + 1) // 2)


def model_defaults(sample, method: Optional[str] = None, overlap: Optional[int] = None) -> tuple:
    """(method, overlap) of a long video: what the call named, else the model's (``sample``, its SampleDefaults:
    ``long_method``; its ``long_overlap`` goes with that method only, and with ``rolling`` where its method is
    ``continue``: the frames its continuation carries), else None (the library's: windows, half the window)."""
    if method in (None, "auto"):
        method = sample.long_method
    if overlap is None and method is not None and method == sample.long_method:
        overlap = sample.long_overlap
    if overlap is None and method == "rolling" and sample.long_method == "continue":
        overlap = sample.long_overlap           # the frames the model's continuation was trained to be given
    return method, overlap


def plan_long_video(frame_num: int, native_frames: int, method: Optional[str] = None,
                    overlap: Optional[int] = None, prompt: Optional[str] = None,
                    temporal_ratio: int = 4) -> Optional[LongVideo]:
    """The long-video plan of a call, or None when ``frame_num`` fits the model's native length (the call
    is then exactly today's single pass) or the method is ``"none"``."""
    method = DEFAULT_METHOD if method in (None, "auto") else method
    if method not in METHODS + ("none",):
        raise LongVideoError(f"unknown long-video method {method!r}: use {', '.join(METHODS)} or none")
    total = latent_frames(frame_num, temporal_ratio)
    window = latent_frames(native_frames, temporal_ratio)
    schedule = isinstance(prompt, str) and "|" in prompt
    if method == "none" or total <= window:
        if schedule:
            raise LongVideoError(f"a prompt schedule ('|', or a list of prompts: one per stretch of a long video) needs "
                                 f"a video longer than the model's {native_frames} frames (frame_num / --frame_num above "
                                 f"{native_frames}); for one scene, give one prompt without '|'. A list of prompts is "
                                 f"no batch (as it is in diffusers): for several videos, call once per prompt")
        return None
    if type(overlap) is int and overlap < 1:
        raise LongVideoError(f"long_overlap must be at least 1 latent frame, got {overlap}: windows that share no "
                             f"frame are clips of their own, cut onto each other at every seam (--long_overlap; "
                             f"default: the method's)")
    if overlap is None:     # rolling: a quarter of the window carried (the ladder the rest), else half the window
        overlap = max(1, window // 4) if method == "rolling" else default_overlap(window)
    plan = plan_windows(total, window, overlap)
    prompts = tuple(split_prompts(prompt, len(plan.spans))) if schedule else None
    return LongVideo(method, plan, prompts)


class Windowed(Wrapper):
    """The ``windows`` method over a denoiser: each step, the velocity of the whole long latent is the blend
    of the inner denoiser's velocities on each window (with that window's conditioning)."""

    def __init__(self, inner, plan: WindowPlan, conds: Optional[Sequence] = None, share=None):
        super().__init__(inner)
        self.plan = plan
        self.weights = blend_weights(plan)
        self.conds = conds           # per-window Conditioning (sliced in time, with its prompt), or None
        self.share = share           # several processes: the windows this one runs (openwan.parallel.windows)

    def __call__(self, x, step):
        base = self.inner.cond

        def one(i, xi):
            if self.conds is not None:
                self.inner.cond = self.conds[i]
            try:
                return self.inner(xi, step)
            finally:
                self.inner.cond = base
        if self.share is None:
            return windowed_velocity(one, x, self.plan, self.weights)
        from openwan.parallel.share import counted          # the forwards the other processes ran counted too
        return counted(self.inner.stats, self.share,
                       lambda: windowed_velocity(one, x, self.plan, self.weights, share=self.share))


def window_conditions(cond, plan: WindowPlan, contexts: Optional[Sequence[torch.Tensor]] = None) -> list:
    """Each window's conditioning: per-frame inputs sliced to the window, and its own prompt's features."""
    out = []
    for i, (s, e) in enumerate(plan.spans):
        c = cond.frames(s, e)
        if contexts is not None:
            c = replace(c, context=contexts[i])
        out.append(c)
    return out
