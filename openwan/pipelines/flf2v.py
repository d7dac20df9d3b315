"""First-last-frame-to-video: two images and a prompt -> a video that starts on one and ends on the other.

    first, last --CLIP--> [2, 257, 1280] --(DiT: viewed [1, 514, 1280] + emb_pos)--> image tokens
    [first, 0, ..., 0, last] (F frames, bicubic to h x w) --VAE--> latent [16, T', h/8, w/8]
    mask [4, T', h/8, w/8]: latent frame 0 all ones, channel 3 of the last latent frame one
    y = cat[mask, latent];  DiT input = cat[noise, y] (36 ch);  guided flow --> VAE --> video

Same as image-to-video otherwise (size from the first frame's aspect ratio at the area of ``size``).

The last frame is first matched to the first frame: when their sizes differ it is resized keeping
its aspect ratio until it covers the first frame (bicubic, antialiased), then centre-cropped to
exactly the first frame's size; both then go through the same resize to the output size and the
same CLIP preprocessing. The reference computes a cover scale for the last frame but never applies
it: it only centre-crops the unscaled frame to the scaled size (zero-padding where that size is
larger, and passing width and height in swapped order), then stretches the result to the output
size, so a last frame of another size or aspect ratio came out padded, cropped or distorted.
"""
from __future__ import annotations

from typing import Optional, Union

from openwan.configs import FLF2V_NEGATIVE_PREFIX, I2V_NEGATIVE_PREFIX
from openwan.pipelines.base import GenerationOutput, Job, PathLike
from openwan.pipelines.i2v import (ImageLike, ImageToVideo, fit_cover, image_to_tensor, load_image, source_name,
                                   with_prefix)


def match_last_frame(first, last):
    """The last frame [3, H2, W2] made exactly the first frame's size [3, H, W]: aspect-preserving
    resize to cover H x W (bicubic, antialiased, clamped to [-1, 1]) then a centre crop."""
    h, w = first.shape[-2:]
    return fit_cover(last, h, w, mode="bicubic")


class FirstLastFrameToVideo(ImageToVideo):
    """``pipe(prompt, first_frame=..., last_frame=...)`` -> :class:`GenerationOutput`.

    ``first_frame``/``last_frame``: paths, PIL images or uint8 [H, W, 3] arrays. A last frame of
    another size is resized (aspect kept) and centre-cropped to the first frame's size. Defaults
    (the reference's): 50 steps, shift 16, guidance 5, the flf2v negative prompt.
    """

    task = "flf2v"
    model_type = "flf2v"

    def default_shift(self, width: int, height: int) -> float:
        return self.defaults().shift

    def default_negative_prompt(self) -> str:
        return with_prefix(self.defaults().negative_prompt, FLF2V_NEGATIVE_PREFIX, I2V_NEGATIVE_PREFIX)

    def clip_features(self, images):
        """Both frames' CLIP features [2, N, C]; the DiT's ``emb_pos`` needs 2 * N tokens (2 x 257)."""
        fea = super().clip_features(images)
        emb_pos = getattr(self.dit.img_emb, "emb_pos", None)
        if emb_pos is not None and fea.shape[0] * fea.shape[1] != emb_pos.shape[1]:
            raise ValueError(f"the image encoder gives {fea.shape[1]} tokens per image but this flf2v DiT's "
                             f"img_emb.emb_pos expects {emb_pos.shape[1] // 2} (2 x {emb_pos.shape[1] // 2} = "
                             f"{emb_pos.shape[1]}): the checkpoint's CLIP (image_size / patch_size) does not "
                             f"match its DiT")
        return fea

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *, first_frame: ImageLike = None,
                 last_frame: ImageLike = None, size: Union[str, tuple, None] = None,
                 frame_num: Optional[int] = None, sample_steps: Optional[int] = None,
                 sample_shift: Optional[float] = None, guide_scale: Optional[float] = None,
                 sample_solver: Optional[str] = None, seed: Optional[int] = None, output_type: str = "uint8",
                 output_path: Optional[PathLike] = None, overwrite: bool = False, cfg_batch: bool = True,
                 strict_size: bool = True, return_frames: bool = True, callback=None,
                 step_cache: Optional[str] = None) -> GenerationOutput:
        """Generate a video from ``first_frame`` to ``last_frame`` (frame_num >= 5)."""
        job = self.prepare(prompt, negative_prompt=negative_prompt,
                           first_frame=first_frame, last_frame=last_frame, size=size,
                           frame_num=frame_num, sample_steps=sample_steps, sample_shift=sample_shift,
                           guide_scale=guide_scale, sample_solver=sample_solver, seed=seed, output_type=output_type,
                           output_path=output_path, overwrite=overwrite, cfg_batch=cfg_batch,
                           strict_size=strict_size, return_frames=return_frames, step_cache=step_cache)
        return self.generate(job, callback)

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, *, first_frame: ImageLike = None,
                last_frame: ImageLike = None, **kw) -> Job:
        """Validate, encode the prompts and both frames, draw the noise: a :class:`Job` for :meth:`run`."""
        first = image_to_tensor(load_image(first_frame, "first_frame"))
        last = match_last_frame(first, image_to_tensor(load_image(last_frame, "last_frame")))
        sources = {"first_frame": source_name(first_frame), "last_frame": source_name(last_frame)}
        return self._prepare([first, last], sources, prompt, negative_prompt, **kw)


PIPELINE = FirstLastFrameToVideo

__all__ = ["FirstLastFrameToVideo", "match_last_frame"]
