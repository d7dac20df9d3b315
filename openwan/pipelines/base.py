"""What every Wan pipeline shares: loading the components, prompts, noise, the guided denoising
loop, decoding and writing the result.

A pipeline is a thin composition: text encoder -> (image encoder) -> DiT + solver -> VAE.
The task pipelines (t2v, i2v, flf2v, vace, v2v) only build their conditioning.
Here: :class:`WanPipeline` (memory plans, prompts, the denoising loop, decoding and writing); loading the
components is in :mod:`openwan.pipelines.components`, a call's settings, job and records in
:mod:`openwan.pipelines.job`, the options every call takes in :mod:`openwan.pipelines.call_options`.
"""
from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from openwan import sampling
from openwan.configs import SampleDefaults
from openwan.denoiser import Conditioning, Denoiser, Guidance

# loading and saving live in components.py, a call's settings and records in job.py, the per-call options in
# call_options.py; re-exported here, where the pipelines and callers look for them
from openwan.pipelines.call_options import CALL_OPTIONS, DIFFUSERS_NAMES, CallOptions  # noqa: F401
from openwan.pipelines.components import (  # noqa: F401
    Components,
    check_checkpoint_dir,
    load_components,
    lookup_variant,
    resolve_device,
)
from openwan.pipelines.job import (  # noqa: F401
    FILE_STATS,
    OUTPUT_TYPES,
    Cancelled,
    GenerationOutput,
    Job,
    PathLike,
    Sampling,
    StepBar,
    add_stats,
    check_frames,
    check_prompt,
    check_size,
    file_record,
    file_stats,
    make_noise,
    parse_size,
    renoise_generator,
    resolve_seed,
)


def module_device(module) -> torch.device:
    """The device of a module's first parameter (CPU for one without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


PROMPT_MEMO_MAX = 32   # prompts whose text features a pipeline keeps (least recently used dropped first)


# ----------------------------------------------------------------------------- the pipeline

class WanPipeline(CallOptions):
    """Base class: holds the components and runs the guided denoising loop.

    A call is three parts: ``prepare(...)`` (validate every input, encode prompts and conditions, draw
    the noise: everything before the loop) -> :class:`Job`; ``run(job, on_step, cancelled)`` (the
    denoising loop) -> latent; ``complete(job, latent)`` (decode, write) -> :class:`GenerationOutput`.

    Memory plans (``offload``), applied by :meth:`resident` around every model call:
      * ``"none"``: every model stays resident on the device (fastest).
      * ``"sequential"``: the text encoder is released after encoding (its prompts stay cached
        in memory for this pipeline), the DiT leaves the device after the denoising loop (before
        the VAE decodes) and the VAE and image encoder after each use; the next call brings them back.
      * ``"blocks"`` (``load_pipeline(offload="blocks:N")``): the DiT streams its blocks itself
        (openwan.offload); the text encoder, image encoder and VAE come to the device only while
        they run and leave for ``offload_device`` after (the text encoder is kept, not released).
    ``t5_cpu=True`` (at load time) runs the text encoder on the CPU while the DiT is elsewhere.
    The pipeline's device is where the DiT was when the pipeline was made (not where it is now).
    """

    task = "t2v"
    two_experts = False          # True for the Wan 2.2 A14B pipelines (openwan.pipelines.moe)
    window_share = None          # under torchrun: the windows this process runs (openwan.parallel.windows)
    cfg_share = None             # under torchrun: the guidance pass this process runs (openwan.parallel.cfg)

    def __init__(self, components: Components, offload: str = "none", progress: bool = True):
        if offload not in ("none", "sequential", "blocks"):
            raise ValueError(f"offload must be 'none', 'sequential' or 'blocks' (the DiT's blocks streamed: "
                             f"openwan.load_pipeline(offload='blocks:N')), got {offload!r}")
        self.c = components
        self.variant = components.variant
        self.offload = offload
        self.progress = progress
        self._device = module_device(components.dit)
        self.offload_device = torch.device("cpu")
        self.load_seconds: Optional[float] = None
        self._loras: list[dict] = []      # the LoRA adapters in use: [{"path", "strength"}]
        self._pending: dict = {}          # a call's fps, tile and long-video options, from __call__ to prepare
        self._prompt_memo: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    # -------------------------------------------------------------- convenience
    @property
    def dit(self):
        return self.c.dit

    @property
    def vae(self):
        return self.c.vae

    @property
    def device(self) -> torch.device:
        """The compute device (stored: the DiT may be off it between calls under offload='sequential')."""
        return self._device

    @classmethod
    def from_pretrained(cls, path: PathLike = "demo", *, variant=None, device=None, dtype=None,
                        offload: str = "none", t5_cpu: bool = False, progress: bool = True, **kw):
        """This pipeline class on the checkpoint at ``path`` (as :func:`openwan.load_pipeline`, without
        importing the package: no import cycle). A two-expert (Wan 2.2 A14B) folder needs an A14B class."""
        if path is None or str(path) == "demo":
            from openwan.demo import demo_checkpoint_dir
            path, variant = demo_checkpoint_dir(), variant or "demo"
        t0 = time.perf_counter()
        release = cls.two_experts and kw.get("experts", "one") == "one" and resolve_device(device).type == "cpu"
        comps = load_components(path, variant=variant, device=device, dtype=dtype, t5_cpu=t5_cpu,
                                release_low=release)    # the CPU's plan: the idle expert read when needed
        if comps.dit_low is not None and not cls.two_experts:
            raise ValueError(f"{path} holds two experts (Wan 2.2 A14B): use openwan.load_pipeline or "
                             f"TextToVideoA14B / ImageToVideoA14B.from_pretrained, not {cls.__name__}")
        pipe = cls(comps, offload=offload, progress=progress, **kw)
        pipe.load_seconds = time.perf_counter() - t0
        return pipe

    def memory_estimate(self, width: int, height: int, frame_num: int, **kw) -> dict:
        """What a call at this size needs on top of the loaded models (openwan.plan.pipeline_estimate)."""
        from openwan.plan import pipeline_estimate
        return pipeline_estimate(self, width, height, frame_num, **kw)

    def defaults(self) -> SampleDefaults:
        return self.variant.sample.for_task(self.task)

    def default_negative_prompt(self) -> str:
        return self.defaults().negative_prompt

    def default_shift(self, width: int, height: int) -> float:
        return self.defaults().shift

    def warn_outside_world(self, prompt: str, look_given: bool = False) -> None:
        """The embedded demo knows a small world: warn about what a prompt asks that it does not know (each part
        of a long video's prompt schedule alone; as many objects as this demo model draws; ``look_given``: a
        reference picture shows the object, so no color or shape is missing). Nothing for other models."""
        from openwan.pipelines.routing import is_demo
        if is_demo(self.variant.name):
            from openwan.demo.world_captions import warn_outside_world
            for part in prompt.split("|"):
                if part.strip():        # an empty part of a schedule is an error, named by the long-video plan
                    warn_outside_world(part.strip(), self.scene_objects(), look_given)

    def scene_objects(self) -> int:
        """How many objects this demo model draws in one video (the warnings' measure)."""
        from openwan.demo.world_captions import scene_objects
        return scene_objects(self.variant)

    def resolve_sampling(self, negative_prompt=None, sample_steps=None, sample_shift=None, guide_scale=None,
                         sample_solver=None, seed=None, *, width: int = 0, height: int = 0) -> Sampling:
        """Fill every sampling argument left None from the variant's defaults; draw a seed if none."""
        d = self.defaults()
        guide_scale = d.guidance if guide_scale is None else guide_scale   # a pair: a guidance interval (its
        if isinstance(guide_scale, (tuple, list)):                          # boundary checked by validate)
            guide_scale = tuple(float(v) for v in guide_scale)
        return Sampling(steps=sample_steps or d.steps,
                        shift=self.default_shift(width, height) if sample_shift is None else sample_shift,
                        guide_scale=guide_scale,
                        solver=sample_solver or d.solver,
                        negative_prompt=self.default_negative_prompt() if negative_prompt is None else negative_prompt,
                        seed=resolve_seed(seed))

    def guide_boundary(self) -> Optional[float]:
        """A guidance interval's boundary for this call (``guide_boundary=``), else the variant's."""
        b = getattr(self, "_guide_boundary", None)
        return self.defaults().boundary if b is None else b

    def step_cache_for(self, steps, strength=None) -> Optional[str]:
        """The step cache of a call that names none: the variant's default when the call runs its whole default
        grid (its default step count, from pure noise: where that default was measured), else None (every step
        computed; video-to-video below strength 1 runs only the grid's tail, too few steps to skip half of)."""
        d = self.defaults()
        return d.step_cache if steps == d.steps and strength in (None, 1.0) else None

    def new_settings(self, step_cache=None, **kw) -> dict:
        """The settings record of a call, with its step cache and an empty ``stats`` to be filled. A call that
        names no cache gets the variant's default one when it runs the variant's default step count (the
        setting that default was measured at); at other step counts every step is computed."""
        from openwan.cache import parse_step_cache
        d = self.settings(**kw)
        if step_cache is None:
            step_cache = self.step_cache_for(d.get("sample_steps"), d.get("strength"))
        spec = parse_step_cache(step_cache)
        d["step_cache"] = "none" if spec is None else str(spec)
        d["stats"] = {} if self.load_seconds is None else {"load": round(self.load_seconds, 4)}
        return d

    # -------------------------------------------------------------- residency
    def move(self, module, device) -> None:
        """Move a model (one place, so tests can observe every move)."""
        module.to(device)

    def where(self, module) -> torch.device:
        return module_device(module) if isinstance(module, torch.nn.Module) else module.device

    @contextmanager
    def resident(self, module):
        """``module`` on the pipeline's device for the block, under the memory plan: moved in when it is
        elsewhere; afterwards the DiT leaves for ``offload_device`` under offload='sequential', the VAE
        and the encoders under 'sequential' and 'blocks' (the text encoder under 'sequential' is
        released instead). Under 'none' the encoders' wrappers (not ``nn.Module``; e.g. ``t5_cpu``)
        keep their own device, as does a text encoder loaded with ``t5_cpu``."""
        wrapper = not isinstance(module, torch.nn.Module)
        if module is None or (wrapper and (self.offload != "blocks" or getattr(module, "released", False))) \
                or (module is self.c.text_encoder and getattr(self.c, "t5_cpu", False)):
            yield module
            return
        if self.where(module) != self.device:
            self.move(module, self.device)
        try:
            yield module
        finally:
            dit = module is self.dit or any(module is e for _, e in self.c.experts())
            leaves = self.offload == "sequential" if dit else (
                self.offload == "blocks" or (self.offload == "sequential" and module is not self.c.text_encoder))
            if leaves and self.device != self.offload_device:
                self.move(module, self.offload_device)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    # -------------------------------------------------------------- prompts
    def encode_prompts(self, prompts: Sequence[str], stats: Optional[dict] = None) -> list[torch.Tensor]:
        """Text features [L_i, dim] on the pipeline's device, memoised per prompt (the last
        ``PROMPT_MEMO_MAX`` prompts used). ``stats["text"]`` gets the seconds spent."""
        t0 = time.perf_counter()
        todo = [p for p in dict.fromkeys(prompts) if p not in self._prompt_memo]
        if todo:
            te = self.c.text_encoder
            if te is None or getattr(te, "released", False):
                raise RuntimeError("the text encoder was released (offload='sequential'); only prompts encoded "
                                   "before can be reused. Load the pipeline again for new prompts.")
            with self.resident(te):
                for p in todo:    # one at a time, as the reference encodes the prompt and the negative prompt:
                    # a batch's padding and GEMM shapes move the features by ulps, which would make a video
                    # depend on which prompts were encoded with it (an earlier call's memo, the partner prompt)
                    self._prompt_memo[p] = te.encode([p])[0].float()
        if self.offload == "sequential" and self.c.text_encoder is not None:
            self.c.text_encoder.release()
        out = []
        for p in prompts:
            self._prompt_memo.move_to_end(p)
            out.append(self._prompt_memo[p].to(self.device))
        while len(self._prompt_memo) > max(PROMPT_MEMO_MAX, len(set(prompts))):
            self._prompt_memo.popitem(last=False)
        if stats is not None:
            stats["text"] = round(time.perf_counter() - t0, 4)
        return out

    def preset_sigmas(self, sp: Sampling, settings: dict) -> Optional[torch.Tensor]:
        """A few-step (distilled) model's explicit timestep list (``defaults().timesteps``): its grid when the
        call runs that many steps (recorded as ``sample_timesteps``), else None; warns when the call sets
        guidance on or more steps than the model was distilled for (blurry / slow-motion results)."""
        ts = getattr(self.defaults(), "timesteps", None)
        if not ts:
            return None
        name = self.variant.name
        scales = sp.guide_scale if isinstance(sp.guide_scale, (tuple, list)) else (sp.guide_scale,)
        if any(g != 1.0 for g in scales):     # Wan 2.2 A14B: one scale per expert
            warnings.warn(f"{name} is a distilled few-step model, trained for guide scale 1 (its guidance is "
                          f"baked in); guide_scale {sp.guide_scale} doubles the cost and tends to over-saturate "
                          f"or blur", stacklevel=3)
        if sp.steps > len(ts):
            warnings.warn(f"{name} is distilled for {len(ts)} steps at timesteps {list(ts)}; {sp.steps} steps on "
                          f"the default grid cost more and tend to give blurry, slow-motion results", stacklevel=3)
        if sp.steps != len(ts):
            return None
        settings["sample_timesteps"] = [int(t) for t in ts]
        return sampling.sigmas_from_timesteps(ts)

    # -------------------------------------------------------------- denoising
    def denoiser(self, cond: Conditioning, guidance: Guidance, step_cache=None, windows=None, dit=None):
        """The model call of a run: the guided :class:`~openwan.denoiser.Denoiser` and, composed over it
        here (the one place wrappers are applied), long-video windows ((plan, per-window conditionings))
        and the step cache. ``dit``: run this DiT instead of the pipeline's (a continuation expert)."""
        from openwan.cache import step_cache_wrapper
        d = Denoiser(self.dit if dit is None else dit, cond, guidance)
        if windows is not None:
            from openwan.long_video import Windowed
            d = Windowed(d, *windows)
        wrap = step_cache_wrapper(step_cache)
        return d if wrap is None else wrap(d)

    def make_job(self, settings: dict, start: torch.Tensor, cond: Conditioning, sp: Sampling, *,
                 cfg_batch: bool = True, sigmas: Optional[torch.Tensor] = None, step_cache=None,
                 **output) -> Job:
        """A :class:`Job` from the prepared pieces (``sigmas`` defaults to the solver's grid)."""
        if step_cache is None:      # the call named none: the one new_settings recorded (the variant's default)
            step_cache = settings.get("step_cache")
        if sigmas is None:
            sigmas = self.preset_sigmas(sp, settings)
        if sigmas is None:
            sigmas = sampling.sigmas_for(sp.solver, sp.steps, sp.shift)
        generator = renoise_generator(sp.seed)     # re-noising solvers' own stream, apart from the initial noise
        boundary = None
        if isinstance(sp.guide_scale, tuple) and not self.two_experts:      # a guidance interval
            boundary = settings["guide_boundary"] = self.guide_boundary()
        method = getattr(self, "_guide_method", None) or "cfg"
        if method != "cfg":
            settings["guide_method"] = method
        guidance = Guidance(sp.guide_scale, cfg_batch, boundary, share=self.cfg_share, method=method)
        if self.cfg_share is not None and not guidance.guides(cond):
            warnings.warn("CFG parallel splits the two passes of guidance; this call is not guided (guide scale 1), "
                          "so both processes run all of it", stacklevel=4)
        return Job(settings, start, cond, guidance, sigmas, sp.solver, step_cache,
                   generator=generator, **output)

    def run(self, job: Job, on_step: Optional[Callable] = None,
            cancelled: Optional[Callable[[], bool]] = None) -> torch.Tensor:
        """The denoising loop: ``job.start`` -> a clean latent [C, F, H, W] (float32).

        ``on_step(step, x, x0)`` is called after every step (:class:`openwan.sampling.Step`, the new sample,
        the model's x0 prediction); ``cancelled()`` is checked before every step and raises
        :class:`Cancelled` when it returns True. ``job.stats`` gets ``denoise`` seconds and the DiT forward
        counts.
        """
        if job.parts:
            from openwan.pipelines.compose import run_composed
            return run_composed(self, job, on_step, cancelled)
        if job.long is not None and job.long.method == "continue":
            from openwan.pipelines.long import run_continued
            return run_continued(self, job, on_step, cancelled)
        if job.long is not None and job.long.method == "rolling":
            from openwan.pipelines.rolling import run_rolling
            return run_rolling(self, job, on_step, cancelled)
        windows = None if job.long is None else (job.long.plan, job.window_conds, self.window_share)
        model = self.dit if job.dit is None else job.dit
        d = self.denoiser(job.cond, job.guidance, job.step_cache, windows, dit=job.dit)
        n_steps = len(job.sigmas) - 1
        bar = StepBar(n_steps, job.label, job.time_left, job.step_units) if self.progress else None
        t0 = time.perf_counter()

        def check():
            if cancelled is not None and cancelled():
                raise Cancelled("generation cancelled")

        def hook(step, x, x0):
            if bar is not None:
                bar.update(step.i + 1)
            if on_step is not None:
                on_step(step, x, x0)
            if step.i + 1 < step.n:
                check()

        resume, keep, before = self._kept_steps(job, d)
        if resume is not None and job.time_left is not None:
            job.time_left.skip(resume[0] * job.step_units)          # the steps an earlier run kept
        try:
            check()
            with self.resident(model), torch.inference_mode():
                needed = bar is not None or on_step is not None or cancelled is not None
                out = sampling.run(d, job.start, job.sigmas, job.solver, on_step=hook if needed else None,
                                   post_step=job.post_step, generator=job.generator, resume=resume, keep=keep)
        finally:
            if bar is not None:
                bar.close()
            job.stats["denoise"] = round(time.perf_counter() - t0, 4)
            job.stats.update(d.stats)
            add_stats(job.stats, before)            # the steps an earlier run made (none: {})
            if resume is not None:
                job.stats["resumed_steps"] = resume[0]
        return out

    def _kept_steps(self, job: Job, d) -> tuple:
        """(resume, keep, the kept counts) of a solve writing an output (openwan.pipelines.resume):
        what an earlier run of the call kept, and the hook keeping this one's (with a step cache, ``d``, its state
        put back); a sub-run's (a ``continue`` long video's window or pass) in its call's file, ``job.steps_kept``;
        nothing under torchrun."""
        kept = job.steps_kept
        if kept is None and (not job.keeps_progress or job.output_path is None):
            return None, None, {}
        from openwan.cache import step_cache_wrapper
        from openwan.pipelines.resume import Progress
        kept = kept if kept is not None else Progress.of(self, job)
        if kept is None:
            return None, None, {}
        cache = d if step_cache_wrapper(job.step_cache) is not None else None
        found = kept.load_steps(job.start, cached=cache is not None)
        before = {} if found is None else found[3]
        resume = None if found is None else found[:3]
        if found is not None and cache is not None:
            cache.load_resume_state(found[4], job.start.device)

        def counts():
            total = dict(before)
            add_stats(total, file_stats(d.stats))
            return total
        return resume, kept.keeper(counts, cache), before

    def generate(self, job: Job, callback: Optional[Callable] = None,
                 cancelled: Optional[Callable[[], bool]] = None) -> GenerationOutput:
        """run + complete; ``callback(i, t, x)`` after every step (``t`` the integer timestep). ``i`` counts the
        call's steps (0 .. sample_steps - 1) also where it runs several denoising runs (a composed scene: each run's
        steps take their share of that count), so progress read from it ends with the call."""
        n = len(job.sigmas) - 1

        def on_step(step, x, x0):
            callback(step.i if step.n == n else step.i * n // step.n, int(step.t), x)
        return self.complete(job, self.run(job, None if callback is None else on_step, cancelled))

    def complete(self, job: Job, latent: torch.Tensor) -> GenerationOutput:
        """Decode and write the result of a run (the job's output options); a long video's progress file
        (openwan.pipelines.resume) is removed once the output is written."""
        out = self.finish(latent[:, job.drop_frames:], job.settings, job.output_type, job.output_path,
                          job.overwrite, fps=job.fps, return_frames=job.return_frames, tile=job.tile,
                          pixels=job.pixels, prefix=job.prefix)
        if job.output_path is not None:
            from openwan.pipelines.resume import forget
            forget(job.output_path)
        return out

    # -------------------------------------------------------------- decoding
    def decode_frames(self, latent: torch.Tensor, stats: Optional[dict] = None, tile=None):
        """Latent [C, T, h, w] -> iterator of uint8 frame chunks [n, H, W, 3] (streamed).
        ``stats["decode"]`` accumulates the seconds spent decoding."""
        from openwan.video import to_uint8
        with self.resident(self.vae) as vae:
            z = latent[None].to(vae.device)
            it = iter(vae.decode_stream(z) if tile in (None, False) else vae.decode_stream(z, tile=tile))
            bar = None
            if self.progress and latent.shape[1] > 1:
                from tqdm.auto import tqdm
                bar = tqdm(total=latent.shape[1], desc="decoding", unit="latent frame", leave=False)
            while True:
                t0 = time.perf_counter()
                chunk = next(it, None)
                if chunk is not None:
                    chunk = to_uint8(chunk[0].float())
                if stats is not None:
                    stats["decode"] = round(stats.get("decode", 0.0) + time.perf_counter() - t0, 4)
                if chunk is None:
                    if bar is not None:
                        bar.close()
                    return
                if bar is not None:
                    bar.update(1)
                yield chunk

    def finish(self, latent: torch.Tensor, settings: dict, output_type: str = "uint8",
               output_path: Optional[PathLike] = None, overwrite: bool = False,
               fps: Optional[float] = None, return_frames: bool = True, tile=None,
               pixels: Optional[np.ndarray] = None, prefix=None) -> GenerationOutput:
        """Decode, optionally write the file (frames streamed straight into the writer), and return. ``pixels``
        (uint8 [F, H, W, 3]): the video made already (a composed scene, merged in pixels), written instead of
        decoding ``latent``; ``prefix`` (openwan.pipelines.extend.Prefix): an extended video's source, its frames
        written first, in place of the decoded ones of its tail.

        ``settings["stats"]`` (when present) gets ``decode`` and ``write`` seconds in the returned record.
        The file's record (tag and .json) keeps only the deterministic stats (:data:`FILE_STATS`): wall
        seconds differ between runs, and the same command must write the same bytes.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if output_type == "latent":
            return GenerationOutput([latent], settings, latents=latent)
        from openwan.video import write_image, write_video
        kept: list[np.ndarray] = []
        fps = fps or self.variant.sample.fps
        stats = settings.get("stats")
        t0 = time.perf_counter()

        def frames():
            chunks = self.decode_frames(latent, stats, tile) if pixels is None else (pixels,)
            for chunk in (chunks if prefix is None else source_then_decoded(chunks, prefix.chunks(), prefix.skip)):
                if return_frames:
                    kept.append(chunk)
                yield chunk

        path = None
        if output_path is not None:
            output_path = Path(output_path)
            if output_path.suffix.lower() == ".png":       # (a video under a .png name is refused up front)
                chunk = np.concatenate(list(frames()))
                path = write_image(chunk[0], output_path, metadata=file_record(settings),
                                   overwrite=overwrite)
            else:
                path = write_video(frames(), output_path, fps=fps, metadata=file_record(settings),
                                   overwrite=overwrite)
            if stats is not None:
                stats["write"] = round(max(0.0, time.perf_counter() - t0 - stats.get("decode", 0.0)), 4)
        else:
            for _ in frames():
                pass
        video = np.concatenate(kept) if kept else None
        if video is None:
            return GenerationOutput([], settings, path)
        out = self._convert(video, output_type)
        # diffusers' shape: (batch, frames, H, W, 3) for arrays; a list of videos otherwise
        frames = out[None] if isinstance(out, np.ndarray) else [out]
        return GenerationOutput(frames, settings, path)

    @staticmethod
    def _convert(video: np.ndarray, output_type: str):
        if output_type == "uint8":
            return video
        if output_type == "np":
            return video.astype(np.float32) / 255.0
        if output_type == "pt":
            return torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255.0
        from PIL import Image
        return [Image.fromarray(f) for f in video]

    # -------------------------------------------------------------- settings record
    def settings(self, **kw) -> dict:
        from openwan.runtime import dtype_name
        dit_dtype = next(self.dit.parameters()).dtype
        d = {"task": self.task, "variant": self.variant.name, "checkpoint": self.c.source,
             "dtype": dtype_name(dit_dtype)}
        if getattr(self.c, "dit_path", ""):
            d["dit"] = self.c.dit_path          # the DiT weights used in place of the checkpoint's
        d.update({k: v for k, v in kw.items() if v is not None})
        return d


def source_then_decoded(chunks, prefix, skip: int):
    """A video's frame chunks as written: every chunk of ``prefix`` (an iterable of uint8 [n, H, W, 3]: an extended
    video's source, as given), then the decoded ``chunks`` without their first ``skip`` frames (the source's part of
    the decode). Streamed: neither is held whole."""
    yield from prefix
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        yield chunk[skip:]
        skip = 0
