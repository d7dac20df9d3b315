"""Extending a video: ``pipe(prompt, extend="clip.mp4", frame_num=N)`` continues a video the user has, to N frames in
all, by the ``continue`` long-video method (:mod:`openwan.pipelines.long`) with the source's latents as the first
window's carried frames.

    source --resampled to the model's rate, fitted to size--> its last 4m+1 frames --VAE, once--> Ts latent frames
    the last ``overlap`` of them carried (clean on a TI2V model, re-imposed otherwise) --> continued windows to N
    --> the whole latent decoded once; the output's first 4m+1 frames are the source's own pixels

The source is encoded once and never decoded and re-encoded (the colour creep other tools' extensions show), and
its frames are written as they were given (fitted to the size): only the new frames come from the decoder, which
runs over the source's latents first so that its causal state at the join is the source's. Every window is a
continued one, so a checkpoint's continuation expert runs them all; the refinement pass (where the variant has one)
redraws the new part from its level, the carried source frames re-imposed at every step.

Text-to-video models only (t2v, and a TI2V-style model without a picture); the method is ``continue``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from openwan.long_video import LongVideoError, latent_frames


EXTEND_TASKS = ("t2v", "ti2v")          # the tasks that take a video to extend


@dataclass(frozen=True)
class Extension:
    """A call's source to extend, read and fitted: ``pixels`` uint8 [F, H, W, 3], the frames the output starts
    with (its last 4m+1 frames); ``name`` its path (None for in-memory frames); ``dropped`` frames of the source
    before them (not in the output: the latent grid takes 4m+1)."""
    pixels: np.ndarray
    name: Optional[str]
    frames: int                    # as read (after resampling)
    dropped: int

    @property
    def kept(self) -> int:
        return self.pixels.shape[0]

    def settings(self) -> dict:
        d = {"source": self.name, "source_frames": self.frames, "kept": self.kept}
        if self.dropped:
            d["dropped"] = self.dropped
        return d


@dataclass
class Given:
    """What a running extension holds: the source's latents [C, Ts, h, w] and ``start``, the latent frame the
    continued windows begin at (Ts minus the frames the first window carries)."""
    latents: torch.Tensor
    start: int


def read_source(source, fps: Optional[float]) -> Extension:
    """The source to extend (a video file, uint8 [F, H, W, 3] array or list of frames; a file resampled to
    ``fps``), its last 4m+1 frames kept; not yet fitted to a size."""
    from openwan.pipelines.inputs import load_video, source_name
    frames = load_video(source, "extend", target_fps=fps)
    kept = 1 + 4 * ((frames.shape[0] - 1) // 4)
    return Extension(frames[frames.shape[0] - kept:], source_name(source), frames.shape[0],
                     frames.shape[0] - kept)


def default_frames(ext: Extension, native: int) -> int:
    """frame_num when the call gives none: the source and one native length more."""
    return ext.kept + native - 1


def check_frames(ext: Extension, frame_num: int) -> None:
    if frame_num <= ext.kept:
        more = ext.kept + 4
        raise LongVideoError(f"frame_num {frame_num}: extending a {ext.kept}-frame video needs a longer frame_num "
                             f"(the whole video's length, the source's frames included): give {more} or more "
                             f"(4n+1)")


def check_task(pipe, job, long_opts: dict) -> None:
    """Extension is text-to-video's ``continue``: refuse what it does not combine with, naming the fix."""
    if pipe.task not in EXTEND_TASKS:
        raise ValueError(f"extend continues a video with a text-to-video model; the {pipe.task} task does not take "
                         f"it (use the t2v task of this checkpoint, or a T2V / TI2V checkpoint)")
    pictures = [n for n in ("first_frame", "last_frame") if getattr(job.cond, n, None) is not None]
    if pictures or job.post_step is not None or job.drop_frames:
        raise ValueError("extend continues the source video from its last frames: it does not combine with a "
                         "picture (image / first_frame / last_frame / src_ref_images); give the prompt and the video")
    if job.parts:
        raise ValueError("extend does not combine with a prompt of two objects drawn as a composed scene: pass "
                         "two_objects='expert' (or prompt one object)")
    method = long_opts.get("method")
    if method not in (None, "auto", "continue"):
        raise ValueError(f"extend continues the video window by window (long_method='continue'); long_method="
                         f"{method!r} does not take a source: leave long_method unset")


def encode(pipe, ext: Extension, width: int, height: int) -> tuple:
    """(the source's latents [C, Ts, h, w] on the pipeline's device, its pixels fitted to width x height: uint8
    [F, H, W, 3], the source's own values where no resize was needed)."""
    from openwan.pipelines.inputs import fit_video, video_to_tensor
    with torch.inference_mode(), pipe.resident(pipe.vae) as vae:
        video = fit_video(video_to_tensor(ext.pixels, vae.device), height, width)
        z = vae.encode(video[None].to(vae.dtype))[0].float().to(pipe.device)
    pixels = ((video.float().cpu().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return z, pixels.permute(1, 2, 3, 0).contiguous().numpy()


def plan(pipe, job, ext: Extension, prompt: str, long_opts: dict) -> None:
    """Make ``job`` an extension of ``ext``: its source encoded, the continued windows planned over the latent frames
    from the carried ones to the end, recorded (``long_video`` with ``"extend"``)."""
    from openwan.long_video import LongVideo, default_overlap, plan_windows, split_prompts, window_conditions
    check_task(pipe, job, long_opts)
    frame_num = job.settings["frame_num"]
    check_frames(ext, frame_num)
    width, height = (int(v) for v in job.settings["size"].split("*"))
    native = pipe.defaults().frame_num
    ratio = pipe.vae.temporal_ratio
    window = latent_frames(native, ratio)
    method, overlap = pipe.long_video_defaults("continue", long_opts.get("overlap"))
    overlap = default_overlap(window) if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap < window:
        raise LongVideoError(f"long_overlap ({overlap!r}): an extension carries 1 to {window - 1} of the source's "
                             f"latent frames into its first window (the window is {window}); give one in that range")
    latents, pixels = encode(pipe, ext, width, height)
    given = latents.shape[1]
    carried = min(overlap, given)
    start = given - carried
    total = latent_frames(frame_num, ratio)
    windows = plan_windows(total - start, window, overlap)
    if len(windows.spans) == 1:         # one window holds it: still recorded with the overlap asked (for --from)
        windows = _replace(windows, overlap=overlap)
    prompts = None
    if "|" in prompt:
        prompts = tuple(split_prompts(prompt, len(windows.spans)))
    long = LongVideo("continue", windows, prompts, given=carried)
    expert = long_opts.get("expert")
    if expert and pipe.c.dit_continue is None:
        raise ValueError(f"long_expert=True: {pipe.c.source or 'this checkpoint'} has no continuation expert "
                         f"(a continuation_model/ folder); leave long_expert unset")
    if pipe.c.dit_continue is not None and expert is not False and not pipe._loras:
        long = _replace(long, expert=True)
    refine = pipe._noise_level(long_opts, "refine", "the noise level the refinement pass starts from")
    refine = pipe.defaults().long_refine if refine is None else refine
    if refine:
        long = _replace(long, refine=float(refine))
    noise = pipe._noise_level(long_opts, "context_noise", "the carried frames' noise level")
    if noise is None and long.expert:
        noise = pipe.defaults().long_context_noise
    if noise:
        if not hasattr(pipe, "continued_window"):
            raise ValueError("long_context_noise needs a TI2V model (task ti2v): leave it unset")
        long = _replace(long, context_noise=float(noise))
    contexts = None
    if long.prompts:
        unique = list(dict.fromkeys(long.prompts))
        feats = dict(zip(unique, pipe.encode_prompts(unique)))
        contexts = [feats[p] for p in long.prompts]
    job.long, job.window_conds = long, window_conditions(job.cond, windows, contexts)
    job.given = Given(latents.to(job.start.dtype), start)
    job.prefix = pixels
    job.settings["long_video"] = {**long.settings(),      # the plan's frames count from the carried ones on
                                  "extend": {**ext.settings(), "latent_frames": given, "windows_from": start}}
    if ext.name is not None:            # the source's path, for --from (in-memory frames have none)
        job.settings["extend"] = ext.name


def _replace(long, **kw):
    from dataclasses import replace
    return replace(long, **kw)
