"""VACE: video generation steered by a source video, a mask and reference images (one model, many tasks).

    frames [3, F, H, W] in [-1, 1], mask m [1, F, H, W] in [0, 1] (1 = generate, 0 = keep)
    inactive = VAE(frames * (1 - [m > 0.5]))  16 ch  |  what to keep
    reactive = VAE(frames * [m > 0.5])        16 ch  |  what to re-render (or the control signal)
    mask folded 8x8 into 64 ch:  [F, H, W] -> [64, F, H/8, W/8] -> nearest-exact to T' = (F+3)//4 frames
    reference images: VAE each (1 latent frame), zero-padded to 32 ch, prepended in time (mask zeros)
    vace_context = cat[inactive, reactive, mask] = 96 ch x (R + T') frames
    noise [16, R + T', H/8, W/8] --guided flow, DiT + VACE blocks (hints * context_scale)--> latent
    latent[:, R:] (reference frames dropped) --VAE--> video

What the inputs mean (as in the reference):

* no ``src_video``: generate from scratch (a zero video, mask all ones), optionally guided by
  reference images (subject / style references);
* ``src_video`` with ``src_mask``: inpainting / outpainting: white mask pixels are generated, black
  ones kept from the source;
* ``src_video`` alone: the whole clip is the control signal (depth, pose, scribble, optical-flow
  frames, or any video to follow): mask all ones, so it enters the reactive stream.

``context_scale`` scales the VACE hints (1 = as trained, 0 = ignore the controls).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from openwan.denoiser import Conditioning
from openwan.pipelines.base import (GenerationOutput, Job, PathLike, WanPipeline, check_frames, check_prompt,
                                    check_size, make_noise, parse_size)
from openwan.pipelines.i2v import (ImageLike, check_output_free, fit_contain, parse_ref_images,
                                   image_to_tensor, load_image, source_name)
from openwan.pipelines.v2v import VideoLike, check_src_fps, choose_frames, fit_video, load_video, video_to_tensor

MaskLike = Union[str, np.ndarray, torch.Tensor, list]


# ============================================================================ inputs

def load_mask(mask: MaskLike, what: str = "src_mask", target_fps: Optional[float] = None) -> np.ndarray:
    """A mask input -> float32 [F, H, W] in [0, 1] (1 = generate).

    Accepts a video or image file, a uint8 video/frame array ([F, H, W, 3], [F, H, W], [H, W, 3]),
    a float or bool array [F, H, W] (values in [0, 1]), or a list of frames. Colour masks use their
    first (red) channel, as the reference does. A single frame applies to every frame. A mask video
    file is resampled to ``target_fps`` like the source video (``load_video``).
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if isinstance(mask, np.ndarray) and (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.floating)):
        m = mask.astype(np.float32)
        if m.ndim == 4 and m.shape[-1] in (1, 3):
            m = m[..., 0]
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise ValueError(f"{what}: a float/bool mask must be [F, H, W] (or [H, W]), got shape {tuple(mask.shape)}")
        if m.size == 0:
            raise ValueError(f"{what}: the mask is empty (shape {tuple(mask.shape)})")
        if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
            raise ValueError(f"{what}: float mask values must lie in [0, 1] (1 = generate), got "
                             f"[{np.nanmin(m):.3g}, {np.nanmax(m):.3g}]")
        return m
    if isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.ndim == 3 and mask.shape[-1] not in (3, 4):
        mask = mask[..., None].repeat(3, axis=-1)       # uint8 [F, H, W] grayscale frames
    frames = load_video(mask, what, allow_image=True, target_fps=target_fps)
    return frames[..., 0].astype(np.float32) / 255.0


def fold_mask(mask: torch.Tensor, num_refs: int = 0, spatial: int = 8, temporal: int = 4) -> torch.Tensor:
    """The VACE mask channels: [F, H, W] -> [spatial^2, R + (F + 3) // temporal, H/spatial, W/spatial].

    Each 8x8 pixel block becomes 64 channels (channel 8*i + j holds pixel (i, j) of the block), the
    frames are resampled to the latent frame count with nearest-exact interpolation, and one
    all-zero frame is prepended per reference image.
    """
    f, h, w = mask.shape
    if h % spatial or w % spatial:
        raise ValueError(f"mask size {w}x{h} is not a multiple of {spatial}")
    hh, ww = h // spatial, w // spatial
    m = mask.reshape(f, hh, spatial, ww, spatial).permute(2, 4, 0, 1, 3).reshape(spatial * spatial, f, hh, ww)
    m = F.interpolate(m[None].float(), size=((f + temporal - 1) // temporal, hh, ww), mode="nearest-exact")[0]
    if num_refs:
        m = torch.cat([m.new_zeros(m.shape[0], num_refs, hh, ww), m], dim=1)
    return m


def vace_context(vae, frames: torch.Tensor, mask: torch.Tensor, refs: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """The 96-channel VACE context [96, R + T', H/8, W/8]: what the pipeline feeds the DiT, and what training caches
    (openwan.training.cache, task "vace") so that training sees the same.

    ``frames`` [3, F, H, W] in [-1, 1]; ``mask`` [F, H, W] in [0, 1]; ``refs``: [3, H, W] images
    in [-1, 1] of the video's size. The source is split by the binarised mask (> 0.5) into
    inactive (kept) and reactive (to generate) parts, each VAE-encoded; the folded mask keeps the
    mask's own values, as the reference does.
    """
    frames = frames.to(vae.device, torch.float32)
    mask = mask.to(vae.device, torch.float32)
    binary = (mask > 0.5).float()[None]

    def enc(x):
        return vae.encode(x[None].to(vae.dtype))[0].float()

    inactive = enc(frames * (1 - binary))
    # without a source the frames are zeros: both halves are the same latent, encode it once
    reactive = inactive if not frames.any() else enc(frames * binary)
    z = torch.cat([inactive, reactive])
    if refs:
        ref_z = [enc(r.to(vae.device, torch.float32)[:, None]) for r in refs]
        ref_z = [torch.cat([u, torch.zeros_like(u)]) for u in ref_z]
        z = torch.cat([*ref_z, z], dim=1)
    m = fold_mask(mask, len(refs), vae.spatial_ratio, vae.temporal_ratio).to(z)
    return torch.cat([z, m])


# ============================================================================ the pipeline

class VACE(WanPipeline):
    """``pipe(prompt, src_video=..., src_mask=..., src_ref_images=[...], context_scale=1.0)``.

    * ``src_video``: path, uint8 [F, H, W, 3] array or list of frames; fitted to ``size``
      (aspect-preserving resize + centre crop). Its first ``frame_num`` frames are used (default:
      the largest 4n+1 it has), after resampling a video file to ``src_fps`` (default the model's rate, 16 for Wan's
      rate, as the reference does; 0 keeps every frame; arrays are used as they are).
    * ``src_mask``: same kinds (or float/bool [F, H, W] in [0, 1]); white = generate. It must have
      the source's size and frame count (a single image applies to every frame); a mask video file is
      resampled to ``src_fps`` too.
    * ``src_ref_images``: paths (a list or one comma-separated string), PIL images or arrays; each is
      scaled to fit inside the video size on a white canvas (the reference's placement).
    * ``context_scale``: strength of the VACE hints.

    The returned ``latents`` (``output_type="latent"``) are the video's, reference frames removed.
    """

    task = "vace"

    def __init__(self, components, offload: str = "none", progress: bool = True):
        super().__init__(components, offload=offload, progress=progress)
        if not self.dit.config.is_vace:
            from openwan.pipelines.routing import is_demo, no_vace_message
            if is_demo(self.variant.name):
                raise ValueError(no_vace_message(self.variant.name))
            raise ValueError(f"the vace task needs a VACE checkpoint (DiT with vace_layers); this one is a "
                             f"{self.dit.config.model_type} model ({self.variant.name}). Load Wan2.1-VACE-1.3B/14B.")

    # -------------------------------------------------------------- conditioning
    def encode_context(self, frames: torch.Tensor, mask: torch.Tensor,
                       refs: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """The 96-channel VACE context [96, R + T', H/8, W/8] (:func:`vace_context` with this pipeline's VAE)."""
        return vace_context(self.vae, frames, mask, refs)

    def prepare_inputs(self, src_video, src_mask, src_ref_images, frame_num: Optional[int], width: int,
                       height: int, src_fps: Optional[float] = None
                       ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], int]:
        """Read and fit every input: (frames [3, F, H, W], mask [F, H, W], refs [[3, H, W]], F).

        All checks happen here, before any model runs.
        """
        d = self.defaults()
        if src_video is not None:
            video = load_video(src_video, "src_video", target_fps=src_fps)
            n = video.shape[0]
            frame_num = choose_frames(n, frame_num)
        else:
            if src_mask is not None:
                raise ValueError("src_mask needs src_video: the mask says which pixels of the source video to "
                                 "regenerate (without a source the whole video is generated)")
            frame_num = d.frame_num if frame_num is None else frame_num
            check_frames(frame_num)
        mask_np = None
        if src_mask is not None:
            mask_np = load_mask(src_mask, "src_mask", target_fps=src_fps)
            if mask_np.shape[1:] != video.shape[1:3]:
                raise ValueError(f"src_mask is {mask_np.shape[2]}x{mask_np.shape[1]} but src_video is "
                                 f"{video.shape[2]}x{video.shape[1]}: the mask must have the video's size")
            if mask_np.shape[0] not in (1, n):
                raise ValueError(f"src_mask has {mask_np.shape[0]} frames but src_video has {n}: give one mask "
                                 f"frame per video frame (or a single image for all)")
        refs = [load_image(r, f"src_ref_images[{i}]") for i, r in enumerate(parse_ref_images(src_ref_images))]

        dev = self.vae.device
        if src_video is not None:
            frames = fit_video(video_to_tensor(video[:frame_num], dev), height, width)
        else:
            frames = torch.zeros(3, frame_num, height, width, device=dev)
        if mask_np is not None:
            m = torch.from_numpy(mask_np).to(dev)
            m = m.expand(frame_num, -1, -1) if m.shape[0] == 1 else m[:frame_num]
            mask = fit_video(m[None], height, width, mode="nearest-exact")[0]
        else:
            mask = torch.ones(frame_num, height, width, device=dev)
        ref_t = [fit_contain(image_to_tensor(r, dev), height, width) for r in refs]
        return frames, mask, ref_t, frame_num

    # -------------------------------------------------------------- call
    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *, src_video: VideoLike = None,
                 src_mask: MaskLike = None, src_ref_images: Union[str, Sequence[ImageLike], None] = None,
                 context_scale: Optional[float] = None, src_fps: Optional[float] = None,
                 size: Union[str, tuple, None] = None,
                 frame_num: Optional[int] = None, sample_steps: Optional[int] = None,
                 sample_shift: Optional[float] = None, guide_scale: Optional[float] = None,
                 sample_solver: Optional[str] = None, seed: Optional[int] = None, output_type: str = "uint8",
                 output_path: Optional[PathLike] = None, overwrite: bool = False, cfg_batch: bool = True,
                 strict_size: bool = True, return_frames: bool = True, callback=None,
                 step_cache: Optional[str] = None) -> GenerationOutput:
        """Generate with VACE controls; every control is optional (none = text-to-video)."""
        job = self.prepare(prompt, negative_prompt=negative_prompt,
                           src_video=src_video, src_mask=src_mask,
                           src_ref_images=src_ref_images, context_scale=context_scale, src_fps=src_fps, size=size,
                           frame_num=frame_num, sample_steps=sample_steps, sample_shift=sample_shift,
                           guide_scale=guide_scale, sample_solver=sample_solver, seed=seed, output_type=output_type,
                           output_path=output_path, overwrite=overwrite, cfg_batch=cfg_batch,
                           strict_size=strict_size, return_frames=return_frames, step_cache=step_cache)
        return self.generate(job, callback)

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, *, src_video: VideoLike = None,
                src_mask: MaskLike = None, src_ref_images: Union[str, Sequence[ImageLike], None] = None,
                context_scale: Optional[float] = None, src_fps: Optional[float] = None,
                size: Union[str, tuple, None] = None,
                frame_num: Optional[int] = None, sample_steps: Optional[int] = None,
                sample_shift: Optional[float] = None, guide_scale: Optional[float] = None,
                sample_solver: Optional[str] = None, seed: Optional[int] = None, output_type: str = "uint8",
                output_path: Optional[PathLike] = None, overwrite: bool = False, cfg_batch: bool = True,
                strict_size: bool = True, return_frames: bool = True, step_cache: Optional[str] = None) -> Job:
        """Validate and fit every input, encode the prompts and the VACE context, draw the noise."""
        d = self.defaults()
        width, height = parse_size(size, d.size)
        check_size(width, height, self.variant, strict_size, vae=self.vae)
        check_prompt(prompt)
        context_scale = 1.0 if context_scale is None else context_scale
        if isinstance(context_scale, bool) or not isinstance(context_scale, (int, float)) \
                or not math.isfinite(context_scale):
            raise ValueError(f"context_scale must be a finite number (1.0 = as trained), got {context_scale!r}")
        fps = check_src_fps(src_fps, self.variant.sample.fps)
        frames, mask, refs, frame_num = self.prepare_inputs(src_video, src_mask, src_ref_images, frame_num,
                                                            width, height, fps)
        sp = self.resolve_sampling(negative_prompt, sample_steps, sample_shift, guide_scale, sample_solver, seed)
        ref_names = [source_name(r) for r in parse_ref_images(src_ref_images)]
        settings = self.new_settings(step_cache, prompt=prompt, size=f"{width}*{height}", frame_num=frame_num,
                                     **sp.settings(), src_video=source_name(src_video),
                                     src_mask=source_name(src_mask),
                                     src_ref_images=",".join(ref_names) if ref_names and all(ref_names) else None,
                                     context_scale=float(context_scale),
                                     src_fps=(fps or 0) if src_video is not None else None)
        check_output_free(output_path, overwrite)

        ctx, ctx_null = self.encode_prompts([prompt, sp.negative_prompt], settings["stats"])
        with torch.inference_mode(), self.resident(self.vae):
            vace_context = self.encode_context(frames, mask, refs).to(self.device)
        noise = make_noise((self.vae.z_dim, *vace_context.shape[1:]), sp.seed, self.device)
        cond = Conditioning(ctx, ctx_null, vace_context=vace_context, vace_scale=float(context_scale))
        return self.make_job(settings, noise, cond, sp, cfg_batch=cfg_batch, step_cache=step_cache,
                             drop_frames=len(refs), output_type=output_type, output_path=output_path,
                             overwrite=overwrite, return_frames=return_frames)


PIPELINE = VACE

__all__ = ["VACE", "fold_mask", "load_mask", "parse_ref_images"]
