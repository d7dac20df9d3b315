"""Image-to-video: an image and a prompt -> a video that starts on that image.

    image --CLIP (penultimate block)--> clip_fea [1, 257, 1280] ------------------------.
    image --bicubic to h x w--> [image, 0, 0, ... 0] (F frames) --VAE--> latent [16, T', h/8, w/8]
    first-frame mask [4, T', h/8, w/8]                                                   |
    y = cat[mask, latent] (20 ch);  DiT input = cat[noise (16), y] = 36 ch  <-------------'
    prompt --umT5--> context;  guided flow (UniPC) --> latent --VAE--> video

The output size follows the image's aspect ratio at the area of ``size`` (the reference rule):
latent side = floor(sqrt(area * aspect) / 8 / 2) * 2, pixels = latent side * 8. So ``size="832*480"``
(area 399360) with a square image gives 624*624, with a 4:3 landscape image 720*544, with an
832x480 image 832*480 (see :func:`i2v_size`).

This module also holds input helpers the other task pipelines share (the frame mask, VACE's reference fit); the
image loading and aspect-preserving fits are :mod:`openwan.pipelines.inputs`' (importable from here too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from openwan.configs import I2V_NEGATIVE_PREFIX, NEGATIVE_PROMPT
from openwan.denoiser import Conditioning
from openwan.pipelines.base import (GenerationOutput, Job, PathLike, WanPipeline, check_frames, check_prompt,
                                    check_size, make_noise, parse_size)
from openwan.pipelines.inputs import (ImageLike, _array_to_rgb, _is_path, fit_cover, i2v_size,  # noqa: F401
                                      image_to_tensor, load_image, source_name)


# The reference's shift for i2v depends on the chosen size, not on the checkpoint (generate.py).
SHIFT_480P, SHIFT_720P = 3.0, 5.0
SIZES_480P = ("832*480", "480*832")
SIZES_720P = ("1280*720", "720*1280")


# ============================================================================ input helpers (shared)

def fit_contain(x: torch.Tensor, height: int, width: int, fill: float = 1.0) -> torch.Tensor:
    """The reference's placement of a VACE reference image: scale [3, H, W] to fit inside
    height x width (bilinear, align_corners False), centred on a ``fill`` canvas (1 = white in [-1, 1]).
    An image already of the target size is returned unchanged."""
    h0, w0 = x.shape[-2:]
    if (h0, w0) == (height, width):
        return x
    scale = min(height / h0, width / w0)
    nh, nw = max(1, int(h0 * scale)), max(1, int(w0 * scale))
    y = F.interpolate(x[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
    canvas = torch.full((x.shape[0], height, width), fill, dtype=torch.float32, device=x.device)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[:, top:top + nh, left:left + nw] = y
    return canvas.to(x.dtype)


def frame_mask(frame_num: int, lat_h: int, lat_w: int, known: Sequence[int] = (0,),
               temporal_ratio: int = 4) -> torch.Tensor:
    """The I2V/FLF2V conditioning mask [4, T', lat_h, lat_w]: 1 where a pixel frame is given.

    Pixel-frame mask m[F] (1 at ``known``), the first frame repeated ``temporal_ratio`` times (F+3
    entries), viewed as [T', 4] and transposed: channel c of latent frame t is frame 4t+c-3 (t > 0).
    So i2v gives latent frame 0 all ones; flf2v also sets channel 3 of the last latent frame.
    """
    m = torch.zeros(frame_num, lat_h, lat_w)
    m[list(known)] = 1.0
    m = torch.cat([m[:1].expand(temporal_ratio, -1, -1), m[1:]])
    return m.view(-1, temporal_ratio, lat_h, lat_w).transpose(0, 1).contiguous()


def condition_latent(vae, images: dict[int, torch.Tensor], frame_num: int, height: int,
                     width: int) -> torch.Tensor:
    """VAE latent [16, T', h, w] of a clip that is ``images[i]`` at frame i and zero elsewhere.

    Each image [3, H, W] in [-1, 1] is resized to height x width by bicubic interpolation
    (align_corners False, no antialias: the reference's rule; the identity at the same size). The
    clip is streamed to the encoder 1 then 4 frames at a time, so the zero frames are
    never held all at once.
    """
    r = vae.temporal_ratio
    resized = {i: F.interpolate(im[None].float(), size=(height, width), mode="bicubic",
                                align_corners=False)[0] for i, im in images.items()}

    def chunks():
        start = 0
        while start < frame_num:
            n = 1 if start == 0 else r
            c = torch.zeros(1, 3, n, height, width, device=vae.device, dtype=vae.dtype)
            for i, im in resized.items():
                if start <= i < start + n:
                    c[0, :, i - start] = im.to(c)
            yield c
            start += n

    return vae.encode(chunks())[0].float()


def image_condition(vae, images: dict[int, torch.Tensor], frame_num: int, height: int,
                    width: int) -> torch.Tensor:
    """The I2V / FLF2V DiT input ``y`` [4 + 16, T', h, w]: cat[frame mask, condition latent].

    ``images`` maps pixel-frame index -> image [3, H, W] in [-1, 1] ({0: first} for i2v,
    {0: first, frame_num - 1: last} for flf2v).
    """
    s = vae.spatial_ratio
    latent = condition_latent(vae, images, frame_num, height, width)
    mask = frame_mask(frame_num, height // s, width // s, sorted(images), vae.temporal_ratio).to(latent)
    return torch.cat([mask, latent])


def check_output_free(output_path: Optional[PathLike], overwrite: bool) -> None:
    """Fail before any work when the output exists (the writer would refuse it at the end)."""
    if output_path is not None and not overwrite and Path(output_path).exists():
        raise FileExistsError(f"{output_path} already exists; pass overwrite=True (or choose another name) "
                              f"to replace it")


def with_prefix(negative_prompt: str, *prefixes: str) -> str:
    """The task's default negative prompt: add the reference's prefixes to the plain t2v default
    (tiny/custom variants carry the plain one); any other text is left alone."""
    return "".join(prefixes) + negative_prompt if negative_prompt == NEGATIVE_PROMPT else negative_prompt


# ============================================================================ the pipeline

class ImageToVideo(WanPipeline):
    """``pipe(prompt, image=...)`` -> :class:`GenerationOutput` with ``frames[0]`` = [F, H, W, 3] uint8.

    ``size`` picks the area (one of the variant's sizes); the output's aspect ratio is the image's.
    Every argument left None takes the variant's default (the reference generate.py's): 40 steps,
    guidance 5, shift 3.0 at the 480p sizes and 5.0 at the 720p ones, and the negative prompt with
    the i2v prefix.
    """

    task = "i2v"
    model_type = "i2v"          # the DiT this pipeline needs

    def __init__(self, components, offload: str = "none", progress: bool = True):
        super().__init__(components, offload=offload, progress=progress)
        cfg = self.dit.config
        if cfg.model_type != self.model_type:
            kind = "vace" if cfg.is_vace else cfg.model_type
            raise ValueError(f"the {self.task} task needs a {self.model_type} checkpoint (DiT model_type "
                             f"{self.model_type!r}, 36 input channels, CLIP image input); this one is a {kind} "
                             f"model ({self.variant.name}). Load a Wan2.1-{self.model_type.upper()}-14B checkpoint.")
        if self.c.image_encoder is None:
            raise ValueError(f"the {self.task} task needs the CLIP image encoder "
                             f"(models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth or image_encoder/) "
                             f"in the checkpoint directory")

    # -------------------------------------------------------------- defaults
    def default_shift(self, width: int, height: int) -> float:
        size = f"{width}*{height}"
        if size in SIZES_480P:
            return SHIFT_480P
        if size in SIZES_720P:
            return SHIFT_720P
        return self.defaults().shift

    def default_negative_prompt(self) -> str:
        return with_prefix(self.defaults().negative_prompt, I2V_NEGATIVE_PREFIX)

    # -------------------------------------------------------------- call
    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *, image: ImageLike = None,
                 size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                 sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                 guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                 seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                 overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                 return_frames: bool = True, callback=None, step_cache: Optional[str] = None) -> GenerationOutput:
        """Generate a video whose first frame is ``image`` (a path, PIL image or uint8 [H, W, 3] array)."""
        job = self.prepare(prompt, negative_prompt=negative_prompt,
                           image=image, size=size, frame_num=frame_num,
                           sample_steps=sample_steps, sample_shift=sample_shift, guide_scale=guide_scale,
                           sample_solver=sample_solver, seed=seed, output_type=output_type, output_path=output_path,
                           overwrite=overwrite, cfg_batch=cfg_batch, strict_size=strict_size,
                           return_frames=return_frames, step_cache=step_cache)
        return self.generate(job, callback)

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, *, image: ImageLike = None,
                **kw) -> Job:
        """Validate, encode the prompts and the image, draw the noise: a :class:`Job` for :meth:`run`."""
        img = load_image(image, "image")
        return self._prepare([image_to_tensor(img)], {"image": source_name(image)}, prompt, negative_prompt, **kw)

    # -------------------------------------------------------------- conditioning
    def clip_features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> CLIP features [N, 257, 1280] (fp32, on the DiT's device)."""
        enc = self.c.image_encoder
        return enc.encode(images.to(enc.device)).float().to(self.device)

    def condition(self, images: list[torch.Tensor], frame_num: int, height: int, width: int) -> dict:
        """The DiT's extra inputs: ``y`` = cat[mask (4), image latent (16)] and ``clip_fea``.

        The VAE and the image encoder each run under :meth:`resident`.

        ``images``: one ([first]) or two ([first, last]) tensors [3, H, W] in [-1, 1] of equal size.
        """
        known = [0] if len(images) == 1 else [0, frame_num - 1]
        with self.resident(self.vae) as vae:
            y = image_condition(vae, dict(zip(known, images)), frame_num, height, width).to(self.device)
        with self.resident(self.c.image_encoder):
            clip_fea = self.clip_features(torch.stack(images))
        return {"y": y, "clip_fea": clip_fea}

    # -------------------------------------------------------------- shared preparation
    def _prepare(self, images: list[torch.Tensor], sources: dict, prompt, negative_prompt, *, size=None,
                 frame_num=None, sample_steps=None, sample_shift=None, guide_scale=None, sample_solver=None,
                 seed=None, output_type="uint8", output_path=None, overwrite=False, cfg_batch=True,
                 strict_size=True, return_frames=True, step_cache=None) -> Job:
        d = self.defaults()
        width, height = parse_size(size, d.size)
        frame_num = d.frame_num if frame_num is None else frame_num
        check_frames(frame_num)
        if len(images) == 2 and frame_num < 5:
            raise ValueError(f"frame_num must be at least 5 for first-last-frame generation, got {frame_num}")
        check_size(width, height, self.variant, strict_size, vae=self.vae)
        check_prompt(prompt)
        ih, iw = images[0].shape[-2:]
        out_h, out_w = i2v_size(ih, iw, width * height, self.vae.spatial_ratio, self.dit.patch_size[1])
        sp = self.resolve_sampling(negative_prompt, sample_steps, sample_shift, guide_scale, sample_solver, seed,
                                   width=width, height=height)
        settings = self.new_settings(step_cache, prompt=prompt, size=f"{width}*{height}",
                                     video_size=f"{out_w}*{out_h}", frame_num=frame_num, **sp.settings(), **sources)
        check_output_free(output_path, overwrite)

        ctx, ctx_null = self.encode_prompts([prompt, sp.negative_prompt], settings["stats"])
        with torch.inference_mode():
            cond = self.condition([im.to(self.vae.device) for im in images], frame_num, out_h, out_w)
        vae = self.vae
        s, r = vae.spatial_ratio, vae.temporal_ratio
        noise = make_noise((vae.z_dim, (frame_num - 1) // r + 1, out_h // s, out_w // s), sp.seed, self.device)
        return self.make_job(settings, noise, Conditioning(ctx, ctx_null, clip_fea=cond["clip_fea"], y=cond["y"]),
                             sp, cfg_batch=cfg_batch, step_cache=step_cache, output_type=output_type,
                             output_path=output_path, overwrite=overwrite, return_frames=return_frames)


def parse_ref_images(refs) -> list:
    """``src_ref_images`` -> a list of image inputs. A string is a comma-separated list of paths
    (the CLI form); a single image or array is one reference."""
    if refs is None:
        return []
    if isinstance(refs, str):
        items = [r.strip() for r in refs.split(",")]
        if any(not r for r in items):
            raise ValueError(f"src_ref_images: empty entry in {refs!r}; give comma-separated image paths")
        return items
    if _is_path(refs) or isinstance(refs, (np.ndarray, torch.Tensor)) or hasattr(refs, "convert"):
        return [refs]
    if isinstance(refs, (list, tuple)):
        return list(refs)
    raise ValueError(f"src_ref_images must be image paths (a list, or one comma-separated string), PIL images or "
                     f"uint8 arrays, got {type(refs).__name__}")


PIPELINE = ImageToVideo

__all__ = ["ImageToVideo", "load_image", "image_to_tensor", "fit_cover", "fit_contain", "i2v_size", "frame_mask",
           "parse_ref_images"]
