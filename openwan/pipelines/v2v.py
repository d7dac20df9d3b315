"""Video-to-video (SDEdit): re-render a source video along a prompt, with any text-to-video checkpoint.

    source video --fit to size (cover + centre crop)--> [3, F, H, W] --VAE--> x0 [16, T', h, w]
    grid = the tail of the full ``steps``-step grid from the first sigma <= strength
    x = (1 - sigma_0) x0 + sigma_0 noise            (openwan.sampling.add_noise)
    guided flow from sigma_0 to 0 --> VAE --> video

``strength`` is the noise level the source is pushed to (0 keeps it, 1 ignores it); see
:func:`openwan.sampling.sigmas_for_strength` for how it maps to steps (with shift > 1 fewer than
``strength * steps`` steps run). This module re-exports the video-loading helpers (:mod:`openwan.pipelines.inputs`) VACE shares.

**Masked** (``src_mask``: VACE's inpainting input, white = generate, on a model without VACE layers): the mask is
taken to the latent grid (a latent cell is generated when any of its pixels is: :func:`latent_mask`); outside it
the source's latents are re-imposed at the current noise level after every step (``(1 - s) x0 + s noise``, the
same noise draw), so they end exactly the source's; inside, the model generates along the prompt from
``strength`` (default 1 with a mask: from pure noise).

**Masked, with a reference picture** (``src_ref_images`` with ``src_mask``: VACE's inpainting with a reference, on a
TI2V-style checkpoint with a reference expert, the embedded demo): the picture's latent stands clean before the
video's latent frames, timestep 0 on its tokens (as in :mod:`openwan.pipelines.ti2v`), re-imposed after every step
with the kept cells, and dropped before decoding; the reference expert runs, so the mask's region gets the
picture's object (where and as the mask's region moves) and the rest stays the source's.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

from openwan import sampling
from openwan.denoiser import Conditioning
from openwan.models.vae_protocol import latent_cells
from openwan.pipelines.base import (GenerationOutput, Job, PathLike, WanPipeline, check_frames, check_prompt,
                                    check_size, make_noise, parse_size)
from openwan.pipelines.i2v import check_output_free, parse_ref_images
from openwan.pipelines.inputs import (IMAGE_SUFFIXES, VideoLike, encode_fitted, fit_video,  # noqa: F401
                                      load_video, source_name, video_to_tensor)

DEFAULT_STRENGTH = 0.8
MASKED_STRENGTH = 1.0       # with a mask: the masked region is generated from noise (VACE's inpainting)


# ============================================================================ input helpers (shared with VACE)

def latent_mask(mask: np.ndarray, height: int, width: int, temporal: int, spatial: int) -> torch.Tensor:
    """A mask video uint8 [F, H, W, 3] (white = generate; F a 4n+1 for the Wan VAEs) -> [1, T', h, w] float 0/1
    on the latent grid: fitted to (height, width) as the source is, a pixel generated where its mean > 127, then a
    latent cell generated when any pixel of its spatial x spatial block in any of its frames is (frame 0 alone
    for latent frame 0, frames 4t-3..4t for latent frame t: the causal VAE's grouping)."""
    m = fit_video(torch.from_numpy(np.ascontiguousarray(mask)).float().mean(-1)[None], height, width,
                  mode="nearest")[0] > 127.5                                                      # [F, H, W]
    return latent_cells(m, temporal, spatial).float()[None]                                       # [1, T', h, w]


def choose_frames(available: int, frame_num: Optional[int], what: str = "src_video") -> int:
    """How many source frames to use: ``frame_num`` (the source must have that many), or by default
    the largest 4n+1 the source has."""
    if frame_num is None:
        return 1 + 4 * ((available - 1) // 4)
    check_frames(frame_num)
    if available < frame_num:
        raise ValueError(f"{what} has {available} frames, fewer than frame_num={frame_num}; pass "
                         f"frame_num={1 + 4 * ((available - 1) // 4)} (or leave it unset to use all it has)")
    return frame_num


SOURCE_FPS = 16.0  # Wan's frame rate: file sources are resampled to it by default (as the reference does)


def check_src_fps(src_fps, default: Optional[float] = None) -> Optional[float]:
    """``src_fps`` -> the rate to resample file sources to: None -> ``default`` (the model's own frame rate:
    16 for Wan 2.1, 8 for the demo; SOURCE_FPS when not given), 0 -> None (every frame)."""
    if src_fps is None:
        return float(default or SOURCE_FPS)
    ok = isinstance(src_fps, (int, float, np.floating)) and not isinstance(src_fps, bool) \
        and math.isfinite(float(src_fps)) and float(src_fps) >= 0
    if not ok:
        raise ValueError(f"src_fps must be a frame rate > 0 to resample a source video file to (default 16, Wan's), "
                         f"or 0 to use every frame as it is; got {src_fps!r}")
    return float(src_fps) or None


def check_strength(strength) -> float:
    ok = isinstance(strength, (int, float, np.floating)) and not isinstance(strength, bool)
    if not ok or not (0.0 < float(strength) <= 1.0):
        raise ValueError(f"strength must be a number in (0, 1] (the noise level the source is pushed to: small keeps "
                         f"more of it, 1 ignores it), got {strength!r}")
    return float(strength)


# ============================================================================ the pipeline

class VideoToVideo(WanPipeline):
    """``pipe(prompt, src_video=..., strength=0.8)`` -> :class:`GenerationOutput` (SDEdit).

    Works with any text-to-video checkpoint: ``load_pipeline(ckpt, task="v2v")``. The source is fitted
    to ``size`` (aspect-preserving resize + centre crop); by default all its frames are used (the
    largest 4n+1). Other defaults are the checkpoint's t2v ones.
    """

    task = "v2v"

    def __init__(self, components, offload: str = "none", progress: bool = True):
        super().__init__(components, offload=offload, progress=progress)
        cfg = self.dit.config
        if cfg.has_image_input or cfg.is_vace:
            kind = "vace" if cfg.is_vace else cfg.model_type
            raise ValueError(f"video-to-video needs a text-to-video checkpoint; this one is a {kind} model "
                             f"({self.variant.name}). Use a Wan2.1-T2V checkpoint.")

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *, src_video: VideoLike = None,
                 src_mask: VideoLike = None, strength: Optional[float] = None, src_fps: Optional[float] = None,
                 size: Union[str, tuple, None] = None,
                 frame_num: Optional[int] = None, sample_steps: Optional[int] = None,
                 sample_shift: Optional[float] = None, guide_scale: Optional[float] = None,
                 sample_solver: Optional[str] = None, seed: Optional[int] = None, output_type: str = "uint8",
                 output_path: Optional[PathLike] = None, overwrite: bool = False, cfg_batch: bool = True,
                 strict_size: bool = True, return_frames: bool = True, callback=None,
                 step_cache: Optional[str] = None, src_ref_images=None) -> GenerationOutput:
        """Re-render ``src_video`` (path, uint8 [F, H, W, 3] array or list of frames) along ``prompt``.

        A video file is first resampled to ``src_fps`` frames per second (default the model's rate: 16 for Wan, 8 for the demo; 0
        keeps every frame)."""
        job = self.prepare(prompt, negative_prompt=negative_prompt,
                           src_video=src_video, src_mask=src_mask, strength=strength, src_fps=src_fps,
                           size=size, frame_num=frame_num, sample_steps=sample_steps, sample_shift=sample_shift,
                           guide_scale=guide_scale, sample_solver=sample_solver, seed=seed, output_type=output_type,
                           output_path=output_path, overwrite=overwrite, cfg_batch=cfg_batch,
                           strict_size=strict_size, return_frames=return_frames, step_cache=step_cache,
                           src_ref_images=src_ref_images)
        return self.generate(job, callback)

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, *, src_video: VideoLike = None,
                src_mask: VideoLike = None, strength: Optional[float] = None, src_fps: Optional[float] = None,
                size: Union[str, tuple, None] = None,
                frame_num: Optional[int] = None, sample_steps: Optional[int] = None,
                sample_shift: Optional[float] = None, guide_scale: Optional[float] = None,
                sample_solver: Optional[str] = None, seed: Optional[int] = None, output_type: str = "uint8",
                output_path: Optional[PathLike] = None, overwrite: bool = False, cfg_batch: bool = True,
                strict_size: bool = True, return_frames: bool = True, step_cache: Optional[str] = None,
                src_ref_images=None) -> Job:
        """Validate, read and encode the source, noise it onto the grid: a :class:`Job` for :meth:`run`."""
        d = self.defaults()
        width, height = parse_size(size, d.size)
        check_size(width, height, self.variant, strict_size, vae=self.vae)
        check_prompt(prompt)
        masked = src_mask is not None
        strength = check_strength((MASKED_STRENGTH if masked else DEFAULT_STRENGTH) if strength is None else strength)
        fps = check_src_fps(src_fps, self.variant.sample.fps)
        frames = load_video(src_video, "src_video", target_fps=fps)
        frame_num = choose_frames(frames.shape[0], frame_num)
        mask = check_mask(load_video(src_mask, "src_mask", allow_image=True, target_fps=fps), frames,
                          frame_num) if masked else None
        refs = self.reference_pictures(src_ref_images, src_mask, frame_num)
        sp = self.resolve_sampling(negative_prompt, sample_steps, sample_shift, guide_scale, sample_solver, seed)
        steps, shift, solver = sp.steps, sp.shift, sp.solver
        sigmas = sampling.sigmas_for_strength(steps, shift, strength, solver)
        if len(sigmas) < 2:
            lowest = sampling.sigmas_for(solver, steps, shift)[-2].item()
            raise ValueError(f"strength {strength} is below the lowest noise level of the {steps}-step grid "
                             f"({lowest:.4f}): no denoising step would run; use a strength >= {lowest:.4f}")
        settings = self.new_settings(step_cache, prompt=prompt, size=f"{width}*{height}", frame_num=frame_num,
                                     **sp.settings(), src_video=source_name(src_video), strength=strength,
                                     src_fps=fps or 0, steps_run=len(sigmas) - 1,
                                     **({"src_mask": source_name(src_mask)} if masked else {}))
        names = [source_name(r) for r in parse_ref_images(src_ref_images)] if refs else []
        if names and all(names):        # (VACE's record: the paths, comma-separated, as the CLI takes them)
            settings["src_ref_images"] = ",".join(names)
        check_output_free(output_path, overwrite)

        ctx, ctx_null = self.encode_prompts([prompt, sp.negative_prompt], settings["stats"])
        x0 = encode_fitted(self, frames[:frame_num], width, height)
        cond, z_ref = Conditioning(ctx, ctx_null), None
        if refs:                # the reference's latent stands first, clean, timestep 0 on its tokens
            from openwan.pipelines.ti2v import FirstFrameConditioning, encode_reference, replace_clean_frames
            with self.resident(self.vae) as vae:
                z_ref = encode_reference(vae, refs[0], width, height, self.device)
            x0, cond = torch.cat([z_ref, x0], dim=1), FirstFrameConditioning(ctx, ctx_null, first_frame=z_ref)
        noise = make_noise(x0.shape, sp.seed, self.device)
        start = sampling.add_noise(x0, noise, sigmas[0].float())
        if z_ref is not None:
            start = replace_clean_frames(start, z_ref)
        job = self.make_job(settings, start, cond, sp, cfg_batch=cfg_batch, sigmas=sigmas,
                            step_cache=step_cache, output_type=output_type, output_path=output_path,
                            overwrite=overwrite, return_frames=return_frames)
        if masked:
            from openwan.long_video import KeepLatents
            m = latent_mask(mask, height, width, self.vae.temporal_ratio, self.vae.spatial_ratio).to(x0.device)
            settings["mask_share"] = round(float(m.mean()), 4)     # of the latent cells, generated
            if z_ref is None:
                job.post_step = KeepLatents(x0, m, noise)         # windowable: long videos by either method
            else:               # the kept cells, then the reference frame clean (as TI2V re-imposes it)
                from openwan.pipelines.long import compose_steps
                keep = KeepLatents(x0, torch.cat([torch.zeros_like(m[:, :1]), m], 1), noise)
                job.post_step = compose_steps(keep, lambda step, x, x0_pred: replace_clean_frames(x, z_ref))
                job.drop_frames, job.dit = 1, self.c.dit_reference
        return job

    def reference_pictures(self, src_ref_images, src_mask, frame_num) -> list:
        """The call's reference picture ([] without), checked: it needs a mask (what region gets the picture's
        object), the checkpoint's reference expert on a TI2V-style DiT, one picture, the native length at most."""
        from openwan.pipelines.ti2v import reference_pictures
        if not parse_ref_images(src_ref_images):
            return []
        if src_mask is None:
            raise ValueError("src_ref_images with src_video draws the picture's object in a region of the video: "
                             "give src_mask too (white = where the object goes, black = kept); for a new video of "
                             "the picture's object give src_ref_images without src_video")
        if self.dit.config.model_type != "ti2v":
            raise ValueError(f"src_ref_images with src_video and src_mask needs a TI2V-style checkpoint with a "
                             f"reference expert (the embedded demo); {self.variant.name} is a "
                             f"{self.dit.config.model_type} model: use a VACE checkpoint (--task vace-1.3B)")
        native = self.defaults().frame_num
        if (frame_num or 0) > native:
            raise ValueError(f"src_ref_images: up to the model's native length ({native} frames); this call would "
                             f"make {frame_num} (pass frame_num={native}, or a shorter src_video)")
        return reference_pictures(self.c, src_ref_images)

    def picture_look(self, picture):
        """What the reference picture shows, for the prompt extension (as TI2V reads its pictures)."""
        from openwan.pipelines.ti2v import picture_look
        return picture_look(picture)

    def denoiser(self, cond, guidance, step_cache=None, windows=None, dit=None):
        """The guided DiT; with a reference picture, timestep 0 on its frame's tokens (TI2V's clean frames)."""
        if getattr(cond, "first_frame", None) is None:
            return super().denoiser(cond, guidance, step_cache, windows, dit)
        from openwan.pipelines.ti2v import clean_frame_denoiser
        return clean_frame_denoiser(self.dit if dit is None else dit, cond, guidance, step_cache, windows)


def check_mask(mask: np.ndarray, frames: np.ndarray, frame_num: int) -> np.ndarray:
    """The mask's first ``frame_num`` frames (a still image: the same mask for every frame), of the source's
    frame size."""
    if mask.shape[1:3] != frames.shape[1:3]:
        raise ValueError(f"src_mask is {mask.shape[2]}x{mask.shape[1]} but src_video is {frames.shape[2]}x"
                         f"{frames.shape[1]}: give a mask of the video's frame size (white = generate, black = keep)")
    if mask.shape[0] == 1:
        return np.repeat(mask, frame_num, axis=0)
    if mask.shape[0] < frame_num:
        raise ValueError(f"src_mask has {mask.shape[0]} frames, the video {frame_num}: give one mask frame per "
                         f"video frame, or a single image for all of them")
    return mask[:frame_num]


PIPELINE = VideoToVideo

__all__ = ["VideoToVideo", "load_video", "video_to_tensor", "fit_video", "choose_frames", "check_strength",
           "latent_mask"]
