"""Text-to-video (and text-to-image, the 1-frame case): prompt -> umT5 -> guided DiT flow -> VAE."""
from __future__ import annotations

from typing import Optional, Union

from openwan.pipelines.base import (GenerationOutput, PathLike, WanPipeline, check_frames, check_size,
                                    make_noise, parse_size, resolve_seed)


class TextToVideo(WanPipeline):
    """``pipe(prompt, ...)`` -> :class:`GenerationOutput` with ``frames[0]`` = [F, H, W, 3] uint8.

    Every argument left None takes the variant's default (the reference generate.py's).
    """

    task = "t2v"

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *,
                 size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                 sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                 guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                 seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                 overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                 return_frames: bool = True, callback=None) -> GenerationOutput:
        d = self.defaults()
        width, height = parse_size(size, d.size)
        frame_num = d.frame_num if frame_num is None else frame_num
        check_frames(frame_num)
        check_size(width, height, self.variant, strict_size)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        steps = sample_steps or d.steps
        shift = d.shift if sample_shift is None else sample_shift
        scale = d.guide_scale if guide_scale is None else guide_scale
        solver = sample_solver or d.solver
        negative_prompt = d.negative_prompt if negative_prompt is None else negative_prompt
        seed = resolve_seed(seed)
        settings = self.settings(prompt=prompt, negative_prompt=negative_prompt, size=f"{width}*{height}",
                                 frame_num=frame_num, sample_steps=steps, sample_shift=shift, guide_scale=scale,
                                 sample_solver=solver, seed=seed)

        ctx, ctx_null = self.encode_prompts([prompt, negative_prompt])
        vae = self.vae
        s, r = vae.spatial_ratio, vae.temporal_ratio
        shape = (vae.z_dim, (frame_num - 1) // r + 1, height // s, width // s)
        noise = make_noise(shape, seed, self.device)
        latent = self.denoise(noise, ctx, ctx_null if scale != 1.0 else None, steps=steps, shift=shift,
                              guide_scale=scale, solver=solver, cfg_batch=cfg_batch, callback=callback)
        return self.finish(latent, settings, output_type, output_path, overwrite, return_frames=return_frames)


class TextToImage(TextToVideo):
    """T2I: text-to-video with one frame, saved as PNG."""

    task = "t2i"

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, **kw) -> GenerationOutput:
        kw["frame_num"] = 1
        return super().__call__(prompt, negative_prompt, **kw)
