"""Wan 2.2 TI2V-5B: text-to-video and image-to-video with one model on the Wan 2.2 VAE (z 48, 16x16x4).

    text-to-video:  noise [48, F', H/16, W/16] --guided DiT flow (one t for every token)--> latent --VAE--> video
    image-to-video: image --resize/crop to the output size--> VAE --> z [48, 1, h, w]
                    latent frame 0 := z before the loop and after every step (the solver's post-step hook);
                    the DiT sees timestep 0 on the tokens of latent frame 0, t elsewhere (per-token t [B, L])

Output size (image-to-video, the reference's ``best_output_size``): the size of area ``W*H`` nearest the
image's aspect whose sides are multiples of 32 (VAE 16 x patch 2), see :func:`ti2v_size`; the image is
scaled (PIL Lanczos) to cover it and centre-cropped. Text-to-video uses the size as given (1280*704 or
704*1280 for the published model). fps 24.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from openwan.denoiser import Conditioning, Denoiser, Guidance, Wrapper
from openwan.models.vae_protocol import size_multiple
from openwan.pipelines.base import (GenerationOutput, Job, PathLike, WanPipeline, check_frames, check_prompt,
                                    check_size, make_noise, parse_size)
from openwan.pipelines.i2v import ImageLike, check_output_free, image_to_tensor, load_image, source_name


def ti2v_size(image_w: int, image_h: int, area: int, multiple: int = 32) -> tuple[int, int]:
    """(width, height) of the video for an image of image_w x image_h at ``area`` pixels.

    With r = w/h: candidate 1 floors the width to the multiple and derives the height from the area,
    candidate 2 the other way round; the one whose aspect is nearer r (strictly) wins, else candidate 2
    (the reference's rule: 1920x1080 at 1280*704 -> 1248x704; 512x512 -> 960x928).
    """
    r = image_w / image_h
    ow = math.sqrt(area * r)
    oh = area / ow
    w1 = math.floor(ow / multiple) * multiple
    h1 = math.floor(area / w1 / multiple) * multiple if w1 > 0 else 0
    h2 = math.floor(oh / multiple) * multiple
    w2 = math.floor(area / h2 / multiple) * multiple if h2 > 0 else 0
    cands = [(w, h) for w, h in ((w1, h1), (w2, h2)) if w > 0 and h > 0]
    if not cands:
        raise ValueError(f"an image of {image_w}x{image_h} is too elongated for an area of {area} pixels "
                         f"(no side of at least {multiple}); crop it or choose a larger size")
    if len(cands) == 1:
        return cands[0]
    d1 = max(r / (w1 / h1), (w1 / h1) / r)
    d2 = max(r / (w2 / h2), (w2 / h2) / r)
    return (w1, h1) if d1 < d2 else (w2, h2)


def crop_to(img: np.ndarray, width: int, height: int) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> [3, height, width] in [-1, 1]: PIL Lanczos scale to cover, centre crop."""
    from PIL import Image
    ih, iw = img.shape[:2]
    if (iw, ih) != (width, height):
        s = max(width / iw, height / ih)
        nw, nh = round(iw * s), round(ih * s)
        pil = Image.fromarray(img).resize((nw, nh), Image.LANCZOS)
        x0, y0 = (nw - width) // 2, (nh - height) // 2
        img = np.asarray(pil.crop((x0, y0, x0 + width, y0 + height)))
    return image_to_tensor(img)


@dataclass
class FirstFrameConditioning(Conditioning):
    """Conditioning plus clean latent frames ``first_frame`` [z, n, h, w] that stand in the first n latent
    frames (the image's latent, n = 1; a continued long-video window: the frames it shares with the last)."""
    first_frame: Optional[torch.Tensor] = None

    def to(self, device) -> "FirstFrameConditioning":
        out = super().to(device)
        ff = self.first_frame
        return dataclasses.replace(out, first_frame=None if ff is None else ff.to(device))

    def frames(self, a: int, b: int) -> "FirstFrameConditioning":
        """Frames a:b; the clean frames condition the window that starts at frame 0 only."""
        return dataclasses.replace(super().frames(a, b), first_frame=self.first_frame if a == 0 else None)


class FirstFrameTimesteps(Wrapper):
    """Per-token timesteps: 0 on the tokens of the conditioning's clean frames (``cond.first_frame``), the
    step's t elsewhere ([1, L], the reference's ``mask[0][:, ::2, ::2] * t`` flattened in (f, h, w) order);
    without clean frames the plain t. ``cond`` is the inner denoiser's (a long video's windows set it)."""

    @property
    def cond(self):
        return self.inner.cond

    @cond.setter
    def cond(self, value):
        self.inner.cond = value

    def __call__(self, x: torch.Tensor, step) -> torch.Tensor:
        z = getattr(self.inner.cond, "first_frame", None)
        if z is None:
            return self.inner(x, step)
        pt, ph, pw = self.inner.dit.patch_size
        n = (x.shape[1] // pt) * (x.shape[2] // ph) * (x.shape[3] // pw)
        t = step.t.reshape(1, 1).expand(1, n).clone()
        t[:, :(z.shape[1] // pt) * (z.shape[2] // ph) * (z.shape[3] // pw)] = 0
        return self.inner(x, dataclasses.replace(step, t=t))


def replace_first_frame(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``x`` with its first latent frames set to ``z`` [C, n, h, w] (the reference's (1 - mask) * z + mask * x,
    exactly)."""
    x = x.clone()
    x[:, :z.shape[1]] = z.to(x)
    return x


class TextImageToVideo(WanPipeline):
    """``pipe(prompt, image=None, ...)`` -> :class:`GenerationOutput` (``frames[0]`` [F, H, W, 3] uint8).

    Without ``image``: text-to-video at ``size``. With ``image``: image-to-video, the output size from the
    image's aspect at the area of ``size`` (:func:`ti2v_size`), its first frame the image.
    """

    task = "ti2v"

    def __init__(self, components, offload: str = "none", progress: bool = True):
        super().__init__(components, offload=offload, progress=progress)
        cfg = self.dit.config
        if cfg.model_type != "ti2v" or self.vae.z_dim != cfg.in_dim:
            raise ValueError(f"the ti2v task needs Wan 2.2 TI2V-5B (model_type 'ti2v', 48 channels, Wan2.2_VAE); "
                             f"this checkpoint's DiT is {cfg.model_type!r} with {cfg.in_dim} input channels and "
                             f"its VAE has {self.vae.z_dim}")

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *, image: ImageLike = None,
                 size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                 sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                 guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                 seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                 overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                 return_frames: bool = True, callback=None, step_cache: Optional[str] = None) -> GenerationOutput:
        job = self.prepare(prompt, negative_prompt=negative_prompt, image=image, size=size, frame_num=frame_num,
                           sample_steps=sample_steps, sample_shift=sample_shift, guide_scale=guide_scale,
                           sample_solver=sample_solver, seed=seed, output_type=output_type, output_path=output_path,
                           overwrite=overwrite, cfg_batch=cfg_batch, strict_size=strict_size,
                           return_frames=return_frames, step_cache=step_cache)
        return self.generate(job, callback)

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, *, image: ImageLike = None,
                size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                return_frames: bool = True, step_cache: Optional[str] = None) -> Job:
        """Validate, encode the prompts (and the image), draw the noise: a :class:`Job` for :meth:`run`."""
        d = self.defaults()
        width, height = parse_size(size, d.size)
        frame_num = d.frame_num if frame_num is None else frame_num
        check_frames(frame_num)
        check_size(width, height, self.variant, strict_size and image is None, vae=self.vae)  # an image: an area
        mult = size_multiple(self.vae, self.dit.patch_size)
        check_prompt(prompt)
        img = None if image is None else load_image(image, "image")
        out_w, out_h = (width, height) if img is None else ti2v_size(img.shape[1], img.shape[0], width * height,
                                                                     mult)
        sp = self.resolve_sampling(negative_prompt, sample_steps, sample_shift, guide_scale, sample_solver, seed,
                                   width=width, height=height)
        extra = {} if img is None else {"video_size": f"{out_w}*{out_h}", "image": source_name(image)}
        settings = self.new_settings(step_cache, prompt=prompt, size=f"{width}*{height}", frame_num=frame_num,
                                     **extra, **sp.settings())
        check_output_free(output_path, overwrite)
        vae = self.vae
        s, r = vae.spatial_ratio, vae.temporal_ratio
        noise = make_noise((vae.z_dim, (frame_num - 1) // r + 1, out_h // s, out_w // s), sp.seed, self.device)
        ctx, ctx_null = self.encode_prompts([prompt, sp.negative_prompt], settings["stats"])
        z = None
        if img is not None:
            x = crop_to(img, out_w, out_h)
            with self.resident(vae), torch.inference_mode():
                z = vae.encode(x[None, :, None].to(vae.device, vae.dtype))[0].float().to(self.device)
        cond = FirstFrameConditioning(ctx, ctx_null, first_frame=z)
        job = self.make_job(settings, noise if z is None else replace_first_frame(noise, z), cond, sp,
                            cfg_batch=cfg_batch, step_cache=step_cache, output_type=output_type,
                            output_path=output_path, overwrite=overwrite, return_frames=return_frames)
        if z is not None:
            job.post_step = lambda step, x, x0: replace_first_frame(x, z)
        return job

    def denoiser(self, cond, guidance: Guidance, step_cache=None, windows=None):
        """The guided DiT; with an image, timestep 0 on latent frame 0's tokens (:class:`FirstFrameTimesteps`);
        past the native length windowed (openwan.long_video), the image conditioning the first window only."""
        from openwan.cache import step_cache_wrapper
        d = FirstFrameTimesteps(Denoiser(self.dit, cond, guidance))
        if windows is not None:
            from openwan.long_video import Windowed
            d = Windowed(d, *windows)
        wrap = step_cache_wrapper(step_cache)
        return d if wrap is None else wrap(d)

    def continued_window(self, job: Job, k: int, known: torch.Tensor, window_noise: torch.Tensor):
        """The ``continue`` long-video method's window ``k`` (openwan.pipelines.long) the way TI2V is trained:
        clean frames with timestep 0 on their tokens. Window 0: the image's latent (if any); later windows:
        the frames shared with the previous window, clean (not re-noised as for the other models), set
        before the loop and after every step. Returns (start, conditioning, post_step)."""
        cond = job.window_conds[k]
        clean = cond.first_frame if k == 0 else (known if known.shape[1] else None)
        if clean is None:
            return window_noise, cond, None
        cond = dataclasses.replace(cond, first_frame=clean)
        return (replace_first_frame(window_noise, clean), cond,
                lambda step, x, x0: replace_first_frame(x, clean))


PIPELINE = TextImageToVideo

__all__ = ["TextImageToVideo", "ti2v_size", "crop_to", "FirstFrameTimesteps", "FirstFrameConditioning",
           "replace_first_frame"]
