"""TI2V: text-, image- and first-last-frame-to-video with one model and clean latent frames (Wan 2.2 TI2V-5B on
the Wan 2.2 VAE, z 48, 16x16x4; any DiT of model_type "ti2v" whose input channels are its VAE's, such as the
embedded demo's TI2V-style model on the Wan 2.1-architecture VAE, z 16).

    text-to-video:  noise [z, F', h, w] --guided DiT flow (one t for every token)--> latent --VAE--> video
    image-to-video: image --resize/crop to the output size--> VAE --> z0 [z, 1, h, w]
                    latent frame 0 := z0 before the loop and after every step (the solver's post-step hook);
                    the DiT sees timestep 0 on the tokens of latent frame 0, t elsewhere (per-token t [B, L])
    first-last-frame: as image-to-video with the first picture, plus the last latent frame := the last picture's
                    :func:`still_latent` (latent frame 1 of a 5-frame still clip of it: what a video ending on
                    that picture and staying there holds in its last latent frame), clean, timestep 0 on its
                    tokens, re-imposed after every step (what ``openwan.training.clean_frames`` trains, ``flf2v``)

Output size with a picture (the reference's ``best_output_size``): the size of area ``W*H`` nearest the
image's aspect whose sides are multiples of the VAE's stride x the patch (32 for TI2V-5B), see
:func:`ti2v_size`; the image is scaled (PIL Lanczos) to cover it and centre-cropped. A model trained at one
size only (its variant lists one size: the embedded demo, 128*128) takes the pictures cover-scaled and
centre-cropped to that size instead. The last picture is fitted to the output size the same way.
Text-to-video uses the size as given (1280*704 or 704*1280 for the published model). fps 24 (the demo: 16).

Reference images (VACE's ``src_ref_images``) on a checkpoint with a reference expert (``reference_model/``: the
embedded demo has one): the picture's latent (fitted as the first picture is, encoded alone) stands before the
video's latent frames as a clean frame, timestep 0 on its tokens, re-imposed after every step, and is dropped
before decoding, as VACE prepends and drops its reference frames (so the call is image-to-video of the picture
one latent frame longer, on the expert, its first latent frame dropped); the expert, trained so
(``openwan/demo/train.py --dit_reference``), runs instead of the main DiT and draws the picture's object doing
what the prompt says, where and as big as the video needs, not where the picture shows it.
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
from openwan.pipelines.i2v import (ImageLike, check_output_free, image_to_tensor, load_image, parse_ref_images,
                                   source_name)


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


def crop_uint8(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> uint8 [height, width, 3] (the picture the model is given): PIL Lanczos scale to cover,
    centre crop."""
    from PIL import Image
    ih, iw = img.shape[:2]
    if (iw, ih) != (width, height):
        s = max(width / iw, height / ih)
        nw, nh = round(iw * s), round(ih * s)
        pil = Image.fromarray(img).resize((nw, nh), Image.LANCZOS)
        x0, y0 = (nw - width) // 2, (nh - height) // 2
        img = np.array(pil.crop((x0, y0, x0 + width, y0 + height)))     # a writable copy
    return img


def crop_to(img: np.ndarray, width: int, height: int) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> [3, height, width] in [-1, 1]: :func:`crop_uint8` as the model's input."""
    return image_to_tensor(crop_uint8(img, width, height))


@dataclass
class FirstFrameConditioning(Conditioning):
    """Conditioning plus clean latent frames that stand in the video's latent: ``first_frame`` [z, n, h, w] in
    the first n latent frames (the image's latent, n = 1; a continued long-video window: the frames it shares
    with the last) and ``last_frame`` [z, m, h, w] in the last m (first-last-frame: the last picture's
    :func:`still_latent`, m = 1). ``length``: the latent frames of the whole video (where ``last_frame``
    belongs when a long video is cut into windows)."""
    first_frame: Optional[torch.Tensor] = None
    last_frame: Optional[torch.Tensor] = None
    length: Optional[int] = None
    first_t: int = 0                    # the first frames' timestep (> 0: a long video's noised carried frames)

    def to(self, device) -> "FirstFrameConditioning":
        out = super().to(device)
        mv = lambda v: None if v is None else v.to(device)  # noqa: E731
        return dataclasses.replace(out, first_frame=mv(self.first_frame), last_frame=mv(self.last_frame))

    def frames(self, a: int, b: int) -> "FirstFrameConditioning":
        """Frames a:b; the first clean frames condition the window that starts at frame 0 only, the last ones
        the window that ends at the video's last frame."""
        last = self.last_frame if self.length is not None and b == self.length else None
        return dataclasses.replace(super().frames(a, b), first_frame=self.first_frame if a == 0 else None,
                                   last_frame=last, length=None if last is None else b - a,
                                   first_t=self.first_t if a == 0 else 0)


class FirstFrameTimesteps(Wrapper):
    """Per-token timesteps: 0 on the tokens of the conditioning's clean frames (``cond.first_frame`` at the start,
    ``cond.last_frame`` at the end; ``cond.first_t`` on the first ones when they are given noised), the step's t
    elsewhere ([1, L], the reference's ``mask[0][:, ::2, ::2] * t`` flattened in (f, h, w) order); without clean
    frames the plain t. ``cond`` is the inner denoiser's (a long
    video's windows set it)."""

    @property
    def cond(self):
        return self.inner.cond

    @cond.setter
    def cond(self, value):
        self.inner.cond = value

    def __call__(self, x: torch.Tensor, step) -> torch.Tensor:
        first = getattr(self.inner.cond, "first_frame", None)
        last = getattr(self.inner.cond, "last_frame", None)
        if first is None and last is None:
            return self.inner(x, step)
        pt, ph, pw = self.inner.dit.patch_size
        per_frame = (x.shape[2] // ph) * (x.shape[3] // pw)
        n = (x.shape[1] // pt) * per_frame
        t = step.t.reshape(1, 1).expand(1, n).clone()
        if first is not None:
            t[:, :(first.shape[1] // pt) * per_frame] = getattr(self.inner.cond, "first_t", 0)
        if last is not None:
            t[:, n - (last.shape[1] // pt) * per_frame:] = 0
        return self.inner(x, dataclasses.replace(step, t=t))


def replace_clean_frames(x: torch.Tensor, first: Optional[torch.Tensor] = None,
                         last: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x`` with its first latent frames set to ``first`` [C, n, h, w] and its last ones to ``last`` [C, m, h, w]
    (either may be None), exactly."""
    x = x.clone()
    if first is not None:
        x[:, :first.shape[1]] = first.to(x)
    if last is not None:
        x[:, x.shape[1] - last.shape[1]:] = last.to(x)
    return x


def still_latent(vae, frame: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] pictures in [-1, 1] -> [B, z, 1, h, w]: latent frame 1 of a still clip of each picture
    (1 + temporal_ratio frames), the latent a video ending on that picture and staying there has in its last
    latent frame (what a TI2V-style model trained with ``openwan.training.clean_frames`` is given as the last
    frame; the demo recipe's ``openwan.demo.latents.still_latent`` is the same function)."""
    still = frame[:, :, None].expand(-1, -1, 1 + vae.temporal_ratio, -1, -1)
    return vae.encode(still.contiguous())[:, :, 1:2]


# The most objects a composed scene draws (one run of the main DiT each: the time grows with them). The demo world's
# clips hold one or two; composition puts no limit of its own, this one bounds a call's time.
COMPOSED_OBJECTS = 4


class TextImageToVideo(WanPipeline):
    """``pipe(prompt, image=None, first_frame=None, last_frame=None, ...)`` -> :class:`GenerationOutput`
    (``frames[0]`` [F, H, W, 3] uint8).

    Nothing given: text-to-video at ``size``. ``image`` (or ``first_frame`` alone): image-to-video, its first frame
    the picture. ``first_frame`` and ``last_frame``: first-last-frame-to-video (``frame_num`` >= 5). With a
    picture the output size follows it (see the module docstring; a model of one size: that size).
    """

    task = "ti2v"

    def __init__(self, components, offload: str = "none", progress: bool = True):
        super().__init__(components, offload=offload, progress=progress)
        cfg = self.dit.config
        if cfg.model_type != "ti2v" or self.vae.z_dim != cfg.in_dim:
            raise ValueError(f"the ti2v task needs a TI2V-style DiT (model_type 'ti2v') whose input channels are "
                             f"its VAE's latent channels (Wan 2.2 TI2V-5B: 48 with Wan2.2_VAE); this checkpoint's "
                             f"DiT is {cfg.model_type!r} with {cfg.in_dim} input channels and its VAE has "
                             f"{self.vae.z_dim}")

    def __call__(self, prompt: str, negative_prompt: Optional[str] = None, *, image: ImageLike = None,
                 first_frame: ImageLike = None, last_frame: ImageLike = None,
                 size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                 sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                 guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                 seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                 overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                 return_frames: bool = True, callback=None, step_cache: Optional[str] = None,
                 src_ref_images=None) -> GenerationOutput:
        job = self.prepare(prompt, negative_prompt=negative_prompt, image=image, first_frame=first_frame,
                           last_frame=last_frame, src_ref_images=src_ref_images, size=size, frame_num=frame_num,
                           sample_steps=sample_steps, sample_shift=sample_shift, guide_scale=guide_scale,
                           sample_solver=sample_solver, seed=seed, output_type=output_type, output_path=output_path,
                           overwrite=overwrite, cfg_batch=cfg_batch, strict_size=strict_size,
                           return_frames=return_frames, step_cache=step_cache)
        return self.generate(job, callback)

    def fixed_size(self) -> bool:
        """Whether the model was made for one size only (its variant lists exactly one: the embedded demo): its
        pictures are then fitted to that size, not the size chosen from their aspect (:func:`ti2v_size`)."""
        return len(self.variant.sample.sizes) == 1

    def prepare(self, prompt: str, negative_prompt: Optional[str] = None, *, image: ImageLike = None,
                first_frame: ImageLike = None, last_frame: ImageLike = None,
                size: Union[str, tuple, None] = None, frame_num: Optional[int] = None,
                sample_steps: Optional[int] = None, sample_shift: Optional[float] = None,
                guide_scale: Optional[float] = None, sample_solver: Optional[str] = None,
                seed: Optional[int] = None, output_type: str = "uint8", output_path: Optional[PathLike] = None,
                overwrite: bool = False, cfg_batch: bool = True, strict_size: bool = True,
                return_frames: bool = True, step_cache: Optional[str] = None, src_ref_images=None) -> Job:
        """Validate, encode the prompts (and the pictures), draw the noise: a :class:`Job` for :meth:`run`."""
        refs = self.reference_pictures(src_ref_images, image, first_frame, last_frame)   # ([] without)
        if refs and (frame_num or 0) > self.defaults().frame_num:
            raise ValueError(f"src_ref_images: up to the model's native length ({self.defaults().frame_num} frames), "
                             f"got frame_num {frame_num}; a longer video from a reference picture is not supported")
        if image is not None and first_frame is not None:
            raise ValueError("image and first_frame both give the first frame: pass one of them (first_frame "
                             "with last_frame for first-last-frame-to-video)")
        if last_frame is not None and image is None and first_frame is None:
            raise ValueError("last_frame goes with first_frame (first-last-frame-to-video); for a video that "
                             "starts from a picture give image= (or first_frame=) alone")
        what = "image" if image is not None else "first_frame"
        first_src = image if image is not None else first_frame
        d = self.defaults()
        width, height = parse_size(size, d.size)
        frame_num = d.frame_num if frame_num is None else frame_num
        check_frames(frame_num)
        fixed = self.fixed_size()
        check_size(width, height, self.variant, strict_size and (first_src is None or fixed), vae=self.vae)
        mult = size_multiple(self.vae, self.dit.patch_size)
        check_prompt(prompt)
        vae = self.vae
        s, r = vae.spatial_ratio, vae.temporal_ratio
        latent_frames = (frame_num - 1) // r + 1
        if last_frame is not None and latent_frames < 2:
            raise ValueError(f"first-last-frame-to-video needs at least 2 latent frames: frame_num >= {1 + r}, "
                             f"got {frame_num}")
        img = None if first_src is None else load_image(first_src, what)
        end = None if last_frame is None else load_image(last_frame, "last_frame")
        out_w, out_h = (width, height) if img is None or fixed else ti2v_size(img.shape[1], img.shape[0],
                                                                               width * height, mult)
        sp = self.resolve_sampling(negative_prompt, sample_steps, sample_shift, guide_scale, sample_solver, seed,
                                   width=width, height=height)
        extra = {}
        if img is not None:
            extra = {"video_size": f"{out_w}*{out_h}", what: source_name(first_src)}
        if end is not None:
            extra["last_frame"] = source_name(last_frame)
        names = [source_name(r) for r in parse_ref_images(src_ref_images)] if refs else []
        if names and all(names):        # (VACE's record: the paths, comma-separated, as the CLI takes them)
            extra["src_ref_images"] = ",".join(names)
        settings = self.new_settings(step_cache, prompt=prompt, size=f"{width}*{height}", frame_num=frame_num,
                                     **extra, **sp.settings())
        check_output_free(output_path, overwrite)
        # (a reference picture's latent frame stands before the video's: image-to-video one latent frame longer)
        noise = make_noise((vae.z_dim, len(refs) + latent_frames, out_h // s, out_w // s), sp.seed, self.device)
        ctx, ctx_null = self.encode_prompts([prompt, sp.negative_prompt], settings["stats"])
        z = z_last = None
        if img is not None:
            x = crop_to(img, out_w, out_h)
            with self.resident(vae), torch.inference_mode():
                z = vae.encode(x[None, :, None].to(vae.device, vae.dtype))[0].float().to(self.device)
                if end is not None:
                    x = crop_to(end, out_w, out_h)
                    z_last = still_latent(vae, x[None].to(vae.device, vae.dtype))[0].float().to(self.device)
        if refs:                # the reference pictures' latents stand first, clean; the video follows
            with self.resident(vae):
                z = torch.cat([encode_reference(vae, r, out_w, out_h, self.device) for r in refs], dim=1)
        cond = FirstFrameConditioning(ctx, ctx_null, first_frame=z, last_frame=z_last,
                                      length=None if z_last is None else latent_frames)
        job = self.make_job(settings, replace_clean_frames(noise, z, z_last), cond, sp,
                            cfg_batch=cfg_batch, step_cache=step_cache, output_type=output_type,
                            output_path=output_path, overwrite=overwrite, return_frames=return_frames)
        if refs:
            job.drop_frames, job.dit = len(refs), self.c.dit_reference
        else:
            fits = end is None and frame_num <= d.frame_num
            phrases = self.scene_phrases(prompt)
            pictures = None
            if phrases and img is not None:          # image-to-video, first-last-frame: each picture split per object
                split = [self.object_pictures(crop_uint8(p, out_w, out_h), phrases) for p in (img, end)
                         if p is not None]
                pictures = None if None in split else list(zip(*split))        # per object: (first[, last])
                phrases = phrases if pictures is not None else []
            if phrases:
                job.parts = self.scene_parts(phrases, settings, noise.shape, sp, ctx_null, cfg_batch, step_cache,
                                             pictures)
                job.keep_places = pictures is not None
            else:
                job.dit = self.scene_expert(prompt, fits)
                if job.dit is not None:
                    settings["two_objects"] = "expert"
        if z is not None:
            job.post_step = lambda step, x, x0: replace_clean_frames(x, z, z_last)
        return job

    def composes_scenes(self) -> bool:
        """The embedded demo's models draw a prompt of two objects as a composed scene (:meth:`scene_phrases`)."""
        from openwan.pipelines.routing import is_demo
        return is_demo(self.variant.name)

    def scene_objects(self) -> int:
        """How many objects this model draws in one video: the demo's, :data:`COMPOSED_OBJECTS` (a composed scene);
        2 with a two-object expert; else the variant's."""
        if self.composes_scenes():
            return COMPOSED_OBJECTS
        if self.c.dit_two_objects is not None:
            return 2
        return super().scene_objects()

    def scene_phrases(self, prompt: str) -> list:
        """The object phrases of a call drawn as a composed scene (openwan.pipelines.compose: each object its own
        run of the main DiT, the latents merged): a demo call whose prompt names two objects, or up to
        :data:`COMPOSED_OBJECTS` (``world.object_phrases``; not a prompt schedule), of any length (past the native
        length each object is its own long video), with ``two_objects`` "compose" (the default); else []."""
        if not self.composes_scenes() or getattr(self, "_two_objects", None) == "expert" or "|" in prompt:
            return []
        from openwan.demo.world_captions import object_phrases
        phrases = object_phrases(prompt)
        return phrases if 2 <= len(phrases) <= COMPOSED_OBJECTS else []

    def scene_parts(self, phrases: list, settings: dict, shape, sp, ctx_null, cfg_batch: bool, step_cache,
                    pictures: Optional[list] = None) -> list:
        """One job per object phrase (openwan.pipelines.compose.run_composed merges them): its own prompt and seed
        (:func:`~openwan.pipelines.compose.part_seed`), the call's settings otherwise, and with ``pictures`` (per object
        its first picture, and its last for first-last-frame: :meth:`object_pictures`) image-to-video (first-last-frame)
        from its own pictures; recorded in ``settings["composed"]``."""
        from openwan.pipelines.compose import part_seed
        ctxs = self.encode_prompts(phrases, settings["stats"])
        parts, settings["two_objects"], settings["composed"] = [], "compose", []
        own = {k: v for k, v in settings.items() if k not in ("two_objects", "composed")}
        for k, (phrase, ctx) in enumerate(zip(phrases, ctxs)):
            seed = part_seed(sp.seed, k)
            z = z_last = None
            if pictures is not None:                 # its first picture (and last: first-last-frame), as the call's
                vae = self.vae
                with self.resident(vae), torch.inference_mode():
                    z = vae.encode(image_to_tensor(pictures[k][0])[None, :, None].to(vae.device, vae.dtype))
                    z = z[0].float().to(self.device)
                    if len(pictures[k]) > 1:
                        last = image_to_tensor(pictures[k][1])[None].to(vae.device, vae.dtype)
                        z_last = still_latent(vae, last)[0].float().to(self.device)
            cond = FirstFrameConditioning(ctx, ctx_null, first_frame=z, last_frame=z_last,
                                          length=None if z_last is None else shape[1])
            part = self.make_job(dict(own, prompt=phrase, seed=seed, stats={}),
                                 replace_clean_frames(make_noise(shape, seed, self.device), z, z_last), cond,
                                 dataclasses.replace(sp, seed=seed), cfg_batch=cfg_batch, step_cache=step_cache,
                                 output_type="latent")
            if z is not None:
                part.post_step = lambda step, x, x0, z=z, z_last=z_last: replace_clean_frames(x, z, z_last)
            parts.append(part)
            settings["composed"].append({"prompt": phrase, "seed": seed})
        return parts

    def object_pictures(self, picture: np.ndarray, phrases: list) -> Optional[list]:
        """The call's picture split into one per object phrase (``openwan.demo.detect.object_pictures``: each with
        the other object painted over in the background), matched by the colors the phrases name; None where a
        phrase names no color of the world, two name the same, or a color is not in the picture."""
        from openwan.demo.detect import object_pictures
        from openwan.demo.world_captions import understand
        colors = [understand(p, 1)[0].color for p in phrases]
        return None if None in colors else object_pictures(picture, colors)

    def scene_expert(self, prompt: str, fits: bool):
        """The DiT for a call whose prompt names two objects of the demo world and is not composed (``two_objects=
        "expert"``, or pictures that do not show the colours the prompt names), on a checkpoint with a two-object
        expert (``two_object_model/``): the
        expert where the call ``fits`` what it was trained on (text- or image-to-video at the native length), else
        None (the main DiT), with a warning (once per prompt) that the main one draws one object. None for every other
        prompt and checkpoint; ``two_objects="expert"`` on a checkpoint without one is an error."""
        from openwan.demo.world_captions import objects_named
        method = getattr(self, "_two_objects", None)
        if self.c.dit_two_objects is None:
            if method == "expert":
                raise ValueError(f"two_objects='expert': {self.c.source or 'this checkpoint'} has no two-object "
                                 f"expert (a two_object_model/ folder); leave two_objects unset (compose)")
            return None
        if objects_named(prompt) != 2:
            return None
        if fits:
            return self.c.dit_two_objects
        warned = self.__dict__.setdefault("_two_object_warned", set())     # once per prompt and pipeline
        if prompt in warned:
            return None
        warned.add(prompt)
        import logging
        logging.getLogger("openwan.demo").warning(
            "two objects named: two-object scenes are drawn for text- and image-to-video up to the native length "
            f"({self.defaults().frame_num} frames); this call (first-last-frame or longer) runs the main DiT, which "
            "draws one object")
        return None

    def picture_look(self, picture):
        """What the call's picture shows, for the prompt extension (:func:`picture_look`)."""
        return picture_look(picture)

    def reference_pictures(self, src_ref_images, image, first_frame, last_frame) -> list:
        """The call's reference pictures (uint8 [H, W, 3]; [] without), checked (:func:`reference_pictures`); they
        stand in the place of a first picture."""
        given = [n for n, v in (("image", image), ("first_frame", first_frame), ("last_frame", last_frame))
                 if v is not None]
        if given and parse_ref_images(src_ref_images):
            raise ValueError(f"src_ref_images and {', '.join(given)} exclude each other here: the reference picture "
                             f"takes the place of the first picture; give one or the other")
        return reference_pictures(self.c, src_ref_images)

    def denoiser(self, cond, guidance: Guidance, step_cache=None, windows=None, dit=None):
        """The guided DiT with clean frames (:func:`clean_frame_denoiser`)."""
        return clean_frame_denoiser(self.dit if dit is None else dit, cond, guidance, step_cache, windows)

    def continued_window(self, job: Job, k: int, known: torch.Tensor, window_noise: torch.Tensor):
        """The ``continue`` long-video method's window ``k`` (openwan.pipelines.long) the way TI2V is trained:
        clean frames with timestep 0 on their tokens. Window 0: the image's latent (if any; an extended video's
        first window: the source's frames it carries); later windows: the frames shared with the previous window,
        clean (not re-noised as for the other models; with ``job.long.context_noise`` sigma > 0 moved to noise level
        sigma with the window's own noise, their tokens at timestep floor(1000 sigma): Diffusion Forcing's noisy
        history, for a model so trained); the last
        window also the last picture's latent (first-last-frame), all set before the loop and after every step.
        Returns (start, conditioning, post_step)."""
        cond = job.window_conds[k]
        carried = known.shape[1] > 0          # a later window's shared frames (or an extended video's source's)
        clean = known if carried else (cond.first_frame if k == 0 else None)
        last = cond.last_frame
        if clean is None and last is None:
            return window_noise, cond, None
        first_t = 0
        sigma = job.long.context_noise if job.long is not None else 0.0
        if carried and sigma > 0:     # Diffusion Forcing: the carried frames noised, and said so
            from openwan.sampling import add_noise, timesteps_from_sigmas
            clean = add_noise(clean.float(), window_noise[:, :clean.shape[1]].float(), sigma).to(clean.dtype)
            first_t = int(timesteps_from_sigmas([sigma])[0])     # floor(1000 sigma), as training gives it
        cond = dataclasses.replace(cond, first_frame=clean, first_t=first_t)
        return (replace_clean_frames(window_noise, clean, last), cond,
                lambda step, x, x0: replace_clean_frames(x, clean, last))


def picture_look(picture):
    """(color, shape) of the demo world's object in the first of a call's pictures as given (a path, an array, a
    list of references), for the prompt extension (openwan.prompt_extend.picture_look); None where it cannot be
    read (the call's own checks then name the problem)."""
    from openwan import prompt_extend
    try:
        first = parse_ref_images(picture)[0] if isinstance(picture, (str, list, tuple)) else picture
        return prompt_extend.picture_look(load_image(first, "picture"))
    except Exception:               # noqa: BLE001 - a bad picture is the pipeline's to report, by name
        return None


def clean_frame_denoiser(dit, cond, guidance: Guidance, step_cache=None, windows=None):
    """The guided DiT; with pictures, timestep 0 on the clean frames' tokens (:class:`FirstFrameTimesteps`); past
    the native length windowed (openwan.long_video), the first picture conditioning the first window only and the
    last picture the last window; the step cache over it all."""
    from openwan.cache import step_cache_wrapper
    d = FirstFrameTimesteps(Denoiser(dit, cond, guidance))
    if windows is not None:
        from openwan.long_video import Windowed
        d = Windowed(d, *windows)
    wrap = step_cache_wrapper(step_cache)
    return d if wrap is None else wrap(d)


def reference_pictures(components, src_ref_images) -> list:
    """A call's reference pictures (uint8 [H, W, 3]; [] without), checked: they need the checkpoint's reference
    expert and are one (what the expert is trained on)."""
    from openwan.pipelines.components import REFERENCE_DIR
    refs = parse_ref_images(src_ref_images)
    if not refs:
        return []
    if components.dit_reference is None:
        raise ValueError(f"src_ref_images: {components.source or 'this checkpoint'} has no reference expert (a "
                         f"{REFERENCE_DIR}/ folder, a DiT trained to draw a reference picture's object; the "
                         f"embedded demo has one); for reference images use it or a VACE checkpoint (--task "
                         f"vace-1.3B --ckpt_dir ./Wan2.1-VACE-1.3B)")
    if len(refs) > 1:
        raise ValueError(f"src_ref_images: {len(refs)} pictures given; this checkpoint's reference expert is "
                         f"trained on one reference picture: give one")
    return [load_image(r, f"src_ref_images[{i}]") for i, r in enumerate(refs)]


def encode_reference(vae, picture: np.ndarray, width: int, height: int, device) -> torch.Tensor:
    """A reference picture's latent [z, 1, h, w] (float32, on ``device``): fitted to the output size as a first
    picture is (:func:`crop_to`) and encoded alone, as VACE encodes each reference."""
    with torch.inference_mode():
        x = crop_to(picture, width, height)[None, :, None].to(vae.device, vae.dtype)
        return vae.encode(x)[0].float().to(device)


PIPELINE = TextImageToVideo

__all__ = ["TextImageToVideo", "ti2v_size", "crop_to", "FirstFrameTimesteps", "FirstFrameConditioning",
           "replace_clean_frames", "still_latent"]
