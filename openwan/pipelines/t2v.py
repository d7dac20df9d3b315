"""Text-to-video (and text-to-image, the 1-frame case): prompt -> umT5 -> guided DiT flow -> VAE."""
from __future__ import annotations

from typing import Optional, Union

from openwan.denoiser import Conditioning
from openwan.pipelines.base import (GenerationOutput, Job, PathLike, WanPipeline, check_frames, check_prompt,
                                    check_size, make_noise, parse_size)


class TextToVideo(WanPipeline):
    """``pipe(prompt, ...)`` -> :class:`GenerationOutput` with ``frames[0]`` = [F, H, W, 3] uint8.

    Every argument left None takes the variant's default (the reference generate.py's).
    ``step_cache``: "none", "default" (the recommended one) or NAME[:THRESHOLD] (see :mod:`openwan.caches`); None
    (not given): the variant's own at its default step count (the demo: plan:0.5), else none.
    """

    task = "t2v"

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *,
                 size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                 sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                 guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                 seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                 overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                 return_frames: bool = True, callback=None, step_cache: Optional[str] = None) -> GenerationOutput:
        job = self.prepare(prompt, negative_prompt=negative_prompt,
                           size=size, frame_num=frame_num, sample_steps=sample_steps,
                           sample_shift=sample_shift, guide_scale=guide_scale, sample_solver=sample_solver,
                           seed=seed, output_type=output_type, output_path=output_path, overwrite=overwrite,
                           cfg_batch=cfg_batch, strict_size=strict_size, return_frames=return_frames,
                           step_cache=step_cache)
        return self.generate(job, callback)

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, *,
                size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                return_frames: bool = True, step_cache: Optional[str] = None) -> Job:
        """Validate the inputs, encode the prompts and draw the noise: a :class:`Job` for :meth:`run`."""
        d = self.defaults()
        width, height = parse_size(size, d.size)
        frame_num = d.frame_num if frame_num is None else frame_num
        check_frames(frame_num)
        check_size(width, height, self.variant, strict_size, vae=self.vae)
        check_prompt(prompt)
        sp = self.resolve_sampling(negative_prompt, sample_steps, sample_shift, guide_scale, sample_solver, seed)
        settings = self.new_settings(step_cache, prompt=prompt, size=f"{width}*{height}", frame_num=frame_num,
                                     **sp.settings())

        ctx, ctx_null = self.encode_prompts([prompt, sp.negative_prompt], settings["stats"])
        vae = self.vae
        s, r = vae.spatial_ratio, vae.temporal_ratio
        shape = (vae.z_dim, (frame_num - 1) // r + 1, height // s, width // s)
        noise = make_noise(shape, sp.seed, self.device)
        return self.make_job(settings, noise, Conditioning(ctx, ctx_null), sp, cfg_batch=cfg_batch,
                             step_cache=step_cache, output_type=output_type, output_path=output_path,
                             overwrite=overwrite, return_frames=return_frames)


class TextToImage(TextToVideo):
    """T2I: text-to-video with one frame, saved as PNG."""

    task = "t2i"

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, **kw) -> GenerationOutput:
        kw["frame_num"] = 1
        return super().__call__(prompt, negative_prompt, **kw)

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, **kw) -> Job:
        kw["frame_num"] = 1
        return super().prepare(prompt, negative_prompt=negative_prompt, **kw)
