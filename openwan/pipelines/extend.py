"""Extending a video: ``pipe(prompt, extend="clip.mp4", frame_num=N)`` continues a video the user has, to N frames in
all, by the ``continue`` long-video method (:mod:`openwan.pipelines.long`) with the source's latents as the first
window's carried frames.

    source --resampled to the model's rate--> its last 4m+1 frames; of them the last native length (its tail)
    --fitted to size, VAE once--> Tt latent frames; the last ``overlap`` carried (clean on a TI2V model, re-imposed
    otherwise) --> continued windows to N --> decoded once from the tail on; the output is the source's 4m+1 frames
    as given (fitted to size), then the new frames

The source is encoded once and never decoded and re-encoded (the colour creep other tools' extensions show), and
its frames are written as they were given: only the new frames come from the decoder, which runs over the tail's
latents first so that its causal state at the join is the source's. Memory is bounded whatever the source's length:
a file is read twice, a chunk at a time (once for its length and tail, once into the writer), and only the tail (one
native length) is encoded and held. Every window is a continued one, so a checkpoint's continuation expert runs them
all; the refinement pass (where the variant has one) redraws the new part, the carried frames re-imposed at every
step. ``output_type="latent"`` returns the latents from the tail on.

Text-to-video models (t2v, and a TI2V-style model without a picture) carry latents; the method is ``continue``.
Image-to-video models (i2v, flf2v: :data:`PICTURE_TASKS`) are extended the way they were trained to start a video:
from a picture, the source's last frame (fitted to the size the task's own rule gives), the new frames made by the
task's own long-video method; the output is the source's frames, then the new ones (the picture's decode dropped).
On flf2v ``last_frame`` is where the extension ends. VACE is extended the way it was trained to extend: its source
video is the source's last frames (the first ``long_overlap`` latent frames' worth, kept: mask 0) and grey frames to
generate (mask 1), the job past one window run by the task's long-video method; the output is the source's frames,
then the job's after its known ones. There ``output_type="latent"`` returns the job's latents (from the picture / the
known frames on).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
import torch

from openwan.long_video import LongVideoError, latent_frames


PICTURE_TASKS = {"i2v": "image", "flf2v": "first_frame"}    # extended from the source's last frame as this argument
EXTEND_TASKS = ("t2v", "ti2v", *PICTURE_TASKS, "vace")         # the tasks that take a video to extend


@dataclass(frozen=True)
class Extension:
    """A call's source to extend, read: its last ``kept`` (4m+1) frames are the output's first; ``dropped`` frames
    before them are not in it (the latent grid takes 4m+1). ``tail``: uint8 [<= native, H, W, 3], the last frames,
    the ones encoded; ``source`` the file (read again, in chunks, into the writer) or the in-memory frames; ``name``
    the path (None for in-memory frames)."""
    source: Any
    name: Optional[str]
    fps: Optional[float]
    frames: int                    # as read (after resampling)
    dropped: int
    tail: np.ndarray

    @property
    def kept(self) -> int:
        return self.frames - self.dropped

    def settings(self) -> dict:
        d = {"source": self.name, "source_frames": self.frames, "kept": self.kept}
        if self.dropped:
            d["dropped"] = self.dropped
        return d

    def chunks(self, chunk: int = 16) -> Iterator[np.ndarray]:
        """The kept frames, uint8 [<= chunk, H, W, 3] at a time, as read."""
        if self.name is None:
            for a in range(self.dropped, self.frames, chunk):
                yield self.source[a:min(a + chunk, self.frames)]
            return
        from openwan.video import iter_video
        skip = self.dropped
        for c in iter_video(self.name, self.fps, chunk):
            if skip >= len(c):
                skip -= len(c)
                continue
            yield c[skip:]
            skip = 0


@dataclass
class Given:
    """What a running extension holds: the tail's latents [C, Tt, h, w] and how many of the last of them the first
    window carries; ``start``, the latent frame the continued windows begin at."""
    latents: torch.Tensor
    carried: int

    @property
    def start(self) -> int:
        return self.latents.shape[1] - self.carried


@dataclass(frozen=True)
class Prefix:
    """The output's first frames as given: ``chunks()`` yields them (uint8 [n, H, W, 3], fitted); the decoded video's
    first ``skip`` frames (the tail's) are dropped after them."""
    chunks: Any
    skip: int


def read_source(source, fps: Optional[float], native: int) -> Extension:
    """The source to extend (a video file, uint8 [F, H, W, 3] array or list of frames; a file resampled to ``fps``
    and read a chunk at a time), with its last ``native`` (kept) frames in memory."""
    from collections import deque

    from openwan.pipelines.inputs import _is_path, load_video, source_name
    if _is_path(source) and str(source).strip():
        from pathlib import Path

        from openwan.pipelines.inputs import IMAGE_SUFFIXES
        if Path(source).suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"extend: {source} is an image; give a video file (to start a video from a picture: "
                             f"image=, --image)")
        from openwan.pipelines.inputs import reading
        from openwan.video import iter_video
        tail: deque = deque(maxlen=native)
        n = 0
        with reading("extend", source):
            for c in iter_video(source, fps):
                n += len(c)
                tail.extend(c)
        frames, kept = None, 1 + 4 * ((n - 1) // 4)
        last = np.stack(list(tail)[-min(kept, native):])
    else:
        frames = load_video(source, "extend")
        n = frames.shape[0]
        kept = 1 + 4 * ((n - 1) // 4)
        last = frames[n - min(kept, native):]
    return Extension(frames, source_name(source), fps, n, n - kept, last)


def default_frames(ext: Extension, native: int) -> int:
    """frame_num when the call gives none: the source and one native length more."""
    return ext.kept + native - 1


def new_frames(ext: Extension, frame_num) -> int:
    """The frames an extension to ``frame_num`` adds to the source's kept ones; ``frame_num`` checked first."""
    from openwan.pipelines.job import check_frames as check_4n1
    check_4n1(frame_num)
    check_frames(ext, frame_num)
    return frame_num - ext.kept


def job_arguments(pipe, ext: Extension, kwargs: dict, frame_num: int, long_opts: dict) -> dict:
    """The task's arguments for the job of extending ``ext`` to ``frame_num`` frames. The job makes the new frames
    after some of the source's (so its noise, latents and resource checks scale with them, not with the source): on
    a text-to-video task after the source's tail; on a picture task after the source's last frame, fitted to the
    video size the task's rule gives (so the task's own resize of it is the identity and the join is the source's
    frame), its picture; on VACE after the source's known last frames (:func:`vace_arguments`)."""
    new = new_frames(ext, frame_num)
    if pipe.task == "vace":
        return vace_arguments(pipe, ext, kwargs, new, long_opts)
    key = PICTURE_TASKS.get(pipe.task)
    if key is None:
        return dict(kwargs, frame_num=ext.tail.shape[0] + new)
    kwargs = dict(kwargs, frame_num=1 + new)
    given = [k for k in ("image", "first_frame") if kwargs.get(k) is not None]
    if given:
        end = " (last_frame, where the extension ends, is taken)" if pipe.task == "flf2v" else ""
        raise ValueError(f"extend on the {pipe.task} task starts the new frames from the source's last frame, its "
                         f"picture: leave {given[0]} unset{end}")
    if pipe.task == "flf2v" and kwargs.get("last_frame") is None:
        raise ValueError("extend on the flf2v task makes the new frames from the source's last frame to last_frame: "
                         "give last_frame (to extend without an end picture use an i2v or t2v checkpoint)")
    from openwan.pipelines.inputs import i2v_size
    from openwan.pipelines.job import parse_size
    width, height = parse_size(kwargs.get("size"), pipe.defaults().size)
    h, w = ext.tail.shape[1:3]
    out_h, out_w = i2v_size(h, w, width * height, pipe.vae.spatial_ratio, pipe.dit.patch_size[1])
    kwargs[key] = fit_frames(ext.tail[-1:], out_w, out_h)[0]
    return kwargs


def carried_overlap(pipe, long_opts: dict, rule: str) -> int:
    """The source's latent frames an extension starts its first window from: the call's ``long_overlap``, else the
    model's ``continue`` overlap, else half the window; checked against the window (``rule``, with ``{range}``, says
    what the number means in the error)."""
    from openwan.long_video import default_overlap
    window = latent_frames(pipe.defaults().frame_num, pipe.vae.temporal_ratio)
    _, overlap = pipe.long_video_defaults("continue", long_opts.get("overlap"))
    overlap = default_overlap(window) if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap < window:
        raise LongVideoError(f"long_overlap ({overlap!r}): {rule.format(range=f'1 to {window - 1}')} (the window is "
                             f"{window}); give one in that range")
    return overlap


def vace_known(pipe, ext: Extension, long_opts: dict) -> int:
    """The source's last frames a VACE extension keeps as its known frames: the first :func:`carried_overlap` latent
    frames' worth (4c - 3 frames for c latent frames), at most the source's."""
    overlap = carried_overlap(pipe, long_opts, "a VACE extension keeps the source's last {range} latent frames' worth "
                                               "of frames as known")
    return min(4 * (overlap - 1) + 1, ext.kept)


def vace_arguments(pipe, ext: Extension, kwargs: dict, new: int, long_opts: dict) -> dict:
    """VACE's own extension: ``src_video`` the source's :func:`vace_known` last frames (fitted to the size) then
    ``new`` grey frames, ``src_mask`` 0 (keep) on the known frames and 1 (generate) on the rest."""
    given = [k for k in ("src_video", "src_mask") if kwargs.get(k) is not None]
    if given:
        raise ValueError(f"extend on the vace task makes its source video and mask from the video to extend (its "
                         f"last frames kept, the new ones generated): leave {given[0]} unset")
    from openwan.pipelines.job import parse_size
    width, height = parse_size(kwargs.get("size"), pipe.defaults().size)
    known = vace_known(pipe, ext, long_opts)
    video = np.full((known + new, height, width, 3), 128, np.uint8)      # grey: 0 in [-1, 1], to generate
    video[:known] = fit_frames(ext.tail[-known:], width, height)
    mask = np.ones((known + new, height, width), np.float32)
    mask[:known] = 0.0
    return dict(kwargs, src_video=video, src_mask=mask, frame_num=known + new)


def check_frames(ext: Extension, frame_num: int) -> None:
    if frame_num <= ext.kept:
        more = ext.kept + 4
        raise LongVideoError(f"frame_num {frame_num}: extending a {ext.kept}-frame video needs a longer frame_num "
                             f"(the whole video's length, the source's frames included): give {more} or more "
                             f"(4n+1)")


def check_pipeline(pipe) -> None:
    """Before any work: extension is a text-, image-, first-last-frame-to-video or VACE task's."""
    if pipe.task not in EXTEND_TASKS:
        extra = " (--extend and --src_video exclude each other: give one)" if pipe.task == "v2v" else ""
        raise ValueError(f"extend continues a video with a text-to-video, image-to-video or VACE model; the "
                         f"{pipe.task} task does not take it (use the t2v task of this checkpoint, or a T2V, TI2V, "
                         f"I2V, FLF2V or VACE checkpoint){extra}")


def check_task(pipe, job, long_opts: dict) -> None:
    """Extension is text-to-video's ``continue`` (the task checked before: :func:`check_pipeline`): refuse what it
    does not combine with, naming the fix."""
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
    if pipe._riflex_option(long_opts):
        raise ValueError("long_riflex is for one DiT call over a whole video (long_method='none'); extend continues "
                         "the video window by window at the native length: leave long_riflex unset")


def fit_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [F, H, W, 3] fitted to width x height (aspect kept, centre crop; the frames themselves where no resize
    is needed: the fit's [-1, 1] values rounded back). Frame by frame, so a frame comes out the same whatever chunk
    it is read in (a batched resize may round differently): the picture an image-to-video extension starts from is
    exactly the output's frame before the new ones."""
    from openwan.pipelines.inputs import fit_video, video_to_tensor
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(frames)
    out = []
    for f in frames:
        v = fit_video(video_to_tensor(f[None]), height, width)
        out.append(((v.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy())
    return np.ascontiguousarray(np.concatenate(out))


def fitted_chunks(ext: Extension, width: int, height: int):
    """``chunks()`` of the kept frames fitted to width x height (:func:`fit_frames`), uint8."""
    def chunks():
        for c in ext.chunks():
            yield fit_frames(c, width, height)
    return chunks


def plan(pipe, job, ext: Extension, prompt: str, long_opts: dict, frame_num: int) -> None:
    """Make ``job`` an extension of ``ext``: its source encoded, the continued windows planned over the latent frames
    from the carried ones to the end, recorded (``long_video`` with ``"extend"``). On an image-to-video or VACE task
    the job is the task's own call (:func:`job_arguments`), planned as such and recorded by :func:`plan_given`."""
    from openwan.long_video import LongVideo, plan_windows, split_prompts
    from openwan.pipelines.inputs import encode_fitted
    if pipe.task in PICTURE_TASKS or pipe.task == "vace":
        pipe._plan_long_video(job, prompt, pipe.defaults().frame_num, long_opts)     # the task's own, as it runs
        return plan_given(pipe, job, ext, frame_num)
    check_task(pipe, job, long_opts)
    job.settings["frame_num"] = frame_num             # the whole video's (the job was prepared from the tail on)
    width, height = (int(v) for v in job.settings["size"].split("*"))
    ratio = pipe.vae.temporal_ratio
    window = latent_frames(pipe.defaults().frame_num, ratio)
    overlap = carried_overlap(pipe, long_opts, "an extension carries {range} of the source's latent frames into its "
                                               "first window")
    latents = encode_fitted(pipe, ext.tail, width, height)
    given = latents.shape[1]                        # the tail's latent frames: the last of the source's
    carried = min(overlap, given)
    start = given - carried
    new = latent_frames(frame_num, ratio) - latent_frames(ext.kept, ratio)
    windows = plan_windows(carried + new, window, overlap)
    if len(windows.spans) == 1:         # one window holds it: still recorded with the overlap asked (for --from)
        windows = _replace(windows, overlap=overlap)
    prompts = None
    if "|" in prompt:
        prompts = tuple(split_prompts(prompt, len(windows.spans)))
    expert, noise, refine = pipe._continue_options(long_opts)
    refine = pipe.defaults().long_refine if refine is None else refine
    long = pipe._with_continue_options(LongVideo("continue", windows, prompts), expert, noise, refine)
    pipe._warn_unshared(long)
    pipe._attach_long_video(job, long)
    if job.start.shape[1] != given + new:               # the job's latent is the tail's and the new frames'
        raise RuntimeError(f"extend: the job holds {job.start.shape[1]} latent frames, expected {given} + {new}")
    job.given = Given(latents.to(job.start.dtype), carried)
    job.prefix = Prefix(fitted_chunks(ext, width, height), 4 * (given - 1) + 1)
    job.settings["long_video"]["carried"] = carried
    job.settings["long_video"]["extend"] = {**ext.settings(), "latent_frames": given,   # the plan counts from the
                                            "windows_from": start}                      # carried frames on
    if ext.name is not None:            # the source's path, for --from (in-memory frames have none)
        job.settings["extend"] = ext.name


def plan_given(pipe, job, ext: Extension, frame_num: int) -> None:
    """Make ``job`` (a picture task's, started from the source's last frame, or VACE's, from its known last frames:
    :func:`job_arguments`; its long-video plan, where it is longer than one window, the task's own) an extension of
    ``ext``: the output is the source's frames, then the decoded ones after the source's part; recorded
    (``"extension"``, with ``from_last``: how many of the source's frames the job starts from)."""
    given = job.settings["frame_num"] - (frame_num - ext.kept)      # the job's frames: the source's, then the new
    job.settings["frame_num"] = frame_num             # the whole video's
    for key in (PICTURE_TASKS.get(pipe.task), "src_video", "src_mask", "src_fps"):
        job.settings.pop(key, None)                   # made from the source (None: in-memory frames)
    width, height = (int(v) for v in job.settings.get("video_size", job.settings["size"]).split("*"))
    job.prefix = Prefix(fitted_chunks(ext, width, height), given)
    job.settings["extension"] = {**ext.settings(), "from_last": given}
    if ext.name is not None:            # the source's path, for --from (in-memory frames have none)
        job.settings["extend"] = ext.name


def _replace(long, **kw):
    from dataclasses import replace
    return replace(long, **kw)
