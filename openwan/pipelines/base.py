"""What every Wan pipeline shares: loading the components, prompts, noise, the guided denoising
loop, decoding and writing the result.

A pipeline is a thin composition: text encoder -> (image encoder) -> DiT + solver -> VAE.
The task pipelines (t2v, i2v, flf2v, vace, v2v) only build their conditioning.
"""
from __future__ import annotations

import copy
import functools
import inspect
import random
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from openwan import sampling
from openwan.configs import SampleDefaults, Variant
from openwan.denoiser import Conditioning, Denoiser, Guidance
from openwan.validate import output_fps
# loading and saving live in components.py; re-exported here, where the pipelines and callers look for them
from openwan.pipelines.components import (Components, _device, check_checkpoint_dir, load_components,  # noqa: F401
                                          lookup_variant)

PathLike = Union[str, Path]
OUTPUT_TYPES = ("uint8", "np", "pt", "pil", "latent")

# ----------------------------------------------------------------------------- settings

def parse_size(size: Union[str, Sequence[int], None], default: str) -> tuple[int, int]:
    """'W*H' (the reference's notation) or (W, H) -> (width, height)."""
    size = size or default
    if isinstance(size, str):
        parts = size.lower().replace("x", "*").split("*")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size {size!r} is not of the form W*H, e.g. 832*480")
        return int(parts[0]), int(parts[1])
    w, h = size
    return int(w), int(h)


def check_frames(frame_num: int) -> None:
    if not isinstance(frame_num, int) or frame_num < 1 or (frame_num - 1) % 4:
        lo = max(1, 1 + 4 * ((max(frame_num, 1) - 1) // 4)) if isinstance(frame_num, int) else 81
        raise ValueError(f"frame_num must be of the form 4n+1 (1, 5, 9, ..., 81); got {frame_num!r}, "
                         f"use {lo} or {lo + 4}")


def check_size(width: int, height: int, variant: Variant, strict: bool, vae=None) -> None:
    from openwan.models.vae_protocol import check_size as check_multiple, size_multiple
    if vae is not None:                                               # the loaded VAE's own ratio (8 or 16)
        multiple = size_multiple(vae.spatial_ratio, variant.dit.patch_size)
    else:
        vae_patch = getattr(variant.vae, "patch_size", 1) or 1      # Wan 2.2 VAE: 2x2 patchify, 16x
        multiple = size_multiple(8 * vae_patch, variant.dit.patch_size)
    if multiple > 16:                                                 # Wan 2.2 TI2V: 32 (VAE 16 x patch 2)
        check_multiple(width, height, multiple, variant.name)
    if width % 16 or height % 16 or width <= 0 or height <= 0:
        raise ValueError(f"size {width}*{height}: width and height must be positive multiples of 16 "
                         f"(e.g. {max(16, width // 16 * 16)}*{max(16, height // 16 * 16)})")
    allowed = variant.sample.sizes
    if strict and allowed and f"{width}*{height}" not in allowed:
        raise ValueError(f"size {width}*{height} is not supported by {variant.name}; choose one of "
                         f"{', '.join(allowed)} (or pass strict_size=False to try anyway)")


def check_prompt(prompt) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")


@dataclass(frozen=True)
class Sampling:
    """The resolved sampling settings of one call (the call's arguments over the variant's defaults)."""
    steps: int
    shift: float
    guide_scale: float
    solver: str
    negative_prompt: str
    seed: int

    def settings(self) -> dict:
        """As recorded in the output's metadata (the CLI's flag names)."""
        return {"negative_prompt": self.negative_prompt, "sample_steps": self.steps, "sample_shift": self.shift,
                "guide_scale": self.guide_scale, "sample_solver": self.solver, "seed": self.seed}


def resolve_seed(seed: Optional[int]) -> int:
    if seed is None or seed < 0:
        return random.randint(0, 2**31 - 1)
    return int(seed)


def make_noise(shape: Sequence[int], seed: int, device) -> torch.Tensor:
    """fp32 noise from a CPU generator, so a seed gives the same video on any device."""
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device)


@dataclass
class GenerationOutput:
    """diffusers-style result: ``frames[0]`` is the first video ([F, H, W, 3] or as requested); for uint8 and
    "np" output ``frames`` is one array (1, F, H, W, 3), diffusers' shape; a list of one video otherwise."""
    frames: Any
    settings: dict = field(default_factory=dict)
    path: Optional[Path] = None
    latents: Optional[torch.Tensor] = None


class Cancelled(RuntimeError):
    """Raised by :meth:`WanPipeline.run` when its ``cancelled()`` check returns True."""


@dataclass
class Job:
    """A prepared generation: every input validated and encoded, ready for the denoising loop.

    ``start`` is the sample the loop starts from (noise, or a noised latent for video-to-video) on
    ``sigmas[0]``; ``drop_frames`` leading latent frames are removed before decoding (VACE's reference
    images); ``settings`` is the record written with the output (its ``stats`` filled as the job runs);
    ``post_step(step, x, x0)`` may return a modified sample after each step (e.g. re-imposing known frames);
    ``generator`` feeds re-noising solvers (seeded from the call's seed, so "consistency" is reproducible).
    """
    settings: dict
    start: torch.Tensor
    cond: Conditioning
    guidance: Guidance
    sigmas: torch.Tensor
    solver: str
    step_cache: Any = None
    drop_frames: int = 0
    output_type: str = "uint8"
    output_path: Optional[PathLike] = None
    overwrite: bool = False
    return_frames: bool = True
    post_step: Optional[Callable] = None
    generator: Optional[torch.Generator] = None
    fps: Optional[float] = None
    tile: Any = None                 # VAE decode tiles (pixels, or True): bounded decode memory, not exact
    long: Any = None                 # openwan.long_video.LongVideo when frame_num is past the native length
    window_conds: Optional[list] = None

    @property
    def stats(self) -> dict:
        return self.settings["stats"]


def module_device(module) -> torch.device:
    """The device of a module's first parameter (CPU for one without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


FILE_STATS = ("dit_forwards", "dit_forwards_skipped", "dit_forwards_high", "dit_forwards_low")   # written into outputs


def file_record(settings: dict) -> dict:
    """The metadata written with an output: the settings, with only the deterministic stats."""
    rec = copy.deepcopy(settings)
    if isinstance(rec.get("stats"), dict):
        rec["stats"] = {k: v for k, v in rec["stats"].items() if k in FILE_STATS}
    return {"openwan": rec}


# Options every task's call takes besides its own arguments (handled in one place: WanPipeline._call_options).
# lora: "FILE[:STRENGTH]" or a list of them (openwan.pipelines.adapters); fps: the written video's frame rate;
# long_method ("windows" default, "continue", "none") and long_overlap (latent frames): frame_num beyond the
# model's native length (openwan.long_video); tile: VAE decode in spatial tiles (pixels, or True for 256);
# height/width/num_frames/num_inference_steps/guidance_scale/generator: diffusers' names.
CALL_OPTIONS = ("lora", "fps", "long_method", "long_overlap", "tile", "height", "width", "num_frames",
                "num_inference_steps", "guidance_scale", "generator")
# diffusers' names for openwan's arguments (pipe(prompt, height=480, width=832, num_frames=81, ...))
DIFFUSERS_NAMES = {"num_frames": "frame_num", "num_inference_steps": "sample_steps", "guidance_scale": "guide_scale"}

PROMPT_MEMO_MAX = 32   # prompts whose text features a pipeline keeps (least recently used dropped first)


# ----------------------------------------------------------------------------- the pipeline

class WanPipeline:
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

    def __init_subclass__(cls, **kw):
        """Every task's ``prepare`` (which every call goes through) checks all its arguments first
        (openwan.validate), before any work."""
        super().__init_subclass__(**kw)
        prepare = cls.__dict__.get("prepare")
        if prepare is not None:
            @functools.wraps(prepare)
            def checked(self, prompt, *args, **kwargs):
                from openwan import validate
                self._call_options(kwargs)
                pending, self._pending = self._pending, {}
                fps, tile, long_opts = pending.get("fps"), pending.get("tile"), pending.get("long", {})
                native = self.defaults().frame_num
                frames = kwargs.get("frame_num") or native
                long_on = frames > native and long_opts.get("method") != "none"
                kwargs = validate.for_pipeline(self, dict(kwargs, prompt=prompt),
                                               dit_frames=native if long_on else None)
                job = prepare(self, kwargs.pop("prompt"), *args, **kwargs)
                self._plan_long_video(job, prompt, native, long_opts)
                if self._loras:
                    job.settings["lora"] = [dict(s) for s in self._loras]
                if fps is not None:
                    job.fps = job.settings["fps"] = fps
                if tile not in (None, False):
                    job.tile = job.settings["tile"] = tile
                return job
            cls.prepare = checked
        call = cls.__dict__.get("__call__")
        if call is not None:
            @functools.wraps(call)
            def with_options(self, prompt, *args, **kwargs):
                self._pending = {}
                self._call_options(kwargs)
                return call(self, prompt, *args, **kwargs)
            sig = inspect.signature(call)
            extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
                     for name in CALL_OPTIONS if name not in sig.parameters]
            params = list(sig.parameters.values())
            tail = [q for q in params if q.kind == inspect.Parameter.VAR_KEYWORD]
            head = [q for q in params if q.kind != inspect.Parameter.VAR_KEYWORD]
            with_options.__signature__ = sig.replace(parameters=head + extra + tail)
            cls.__call__ = with_options

    def _plan_long_video(self, job: "Job", prompt: str, native: int, opts: dict) -> None:
        """Past the native length: the window plan, each window's conditioning (and prompt of a schedule)."""
        from openwan.long_video import plan_long_video, window_conditions
        long = plan_long_video(job.settings.get("frame_num", native), native, opts.get("method"),
                               opts.get("overlap"), prompt, self.vae.temporal_ratio)
        if long is None:
            return
        contexts = None
        if long.prompts:
            feats = dict(zip(dict.fromkeys(long.prompts), self.encode_prompts(list(dict.fromkeys(long.prompts)))))
            contexts = [feats[p] for p in long.prompts]
        job.long, job.window_conds = long, window_conditions(job.cond, long.plan, contexts)
        job.settings["long_video"] = long.settings()

    @staticmethod
    def _diffusers_names(kwargs: dict) -> None:
        """Rename diffusers' argument names to openwan's in place (an argument given both ways is an error)."""
        def put(name, value, given):
            if kwargs.get(name) is not None:
                raise ValueError(f"{given} and {name} name the same setting: give one of them")
            kwargs[name] = value
        for theirs, ours in DIFFUSERS_NAMES.items():
            if theirs in kwargs:
                value = kwargs.pop(theirs)
                if value is not None:
                    put(ours, value, theirs)
        h, w = kwargs.pop("height", None), kwargs.pop("width", None)
        if h is not None or w is not None:
            if h is None or w is None:
                raise ValueError("height and width go together (or give size='W*H')")
            put("size", (w, h), "height/width")
        gen = kwargs.pop("generator", None)
        if gen is not None:
            if not isinstance(gen, torch.Generator):
                raise ValueError(f"generator must be a torch.Generator (or give seed=), got {type(gen).__name__}")
            put("seed", int(gen.initial_seed()) % 2**63, "generator")

    def _call_options(self, kwargs: dict) -> None:
        """Apply the per-call options every task takes (:data:`CALL_OPTIONS`), removing them from kwargs."""
        self._diffusers_names(kwargs)
        if "tile" in kwargs:
            self._pending["tile"] = kwargs.pop("tile")
        if "fps" in kwargs:
            fps = kwargs.pop("fps")
            self._pending["fps"] = None if fps is None else output_fps(fps)
        for key in ("long_method", "long_overlap"):
            if key in kwargs:
                value = kwargs.pop(key)
                if value is not None:
                    self._pending.setdefault("long", {})[key.split("_")[1]] = value
        if "lora" in kwargs:
            lora = kwargs.pop("lora")
            if lora is not None or self._loras:
                from openwan.pipelines.adapters import use_loras, use_loras_on_experts
                experts = getattr(self, "experts", None)
                self._loras = use_loras_on_experts(experts, lora) if experts else use_loras(self.dit, lora)

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
        release = cls.two_experts and kw.get("experts", "one") == "one" and _device(device).type == "cpu"
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
        return self.variant.sample

    def default_negative_prompt(self) -> str:
        return self.defaults().negative_prompt

    def default_shift(self, width: int, height: int) -> float:
        return self.defaults().shift

    def warn_outside_world(self, prompt: str) -> None:
        """The embedded demo knows a small world: warn about what a prompt asks that it does not know (each part
        of a long video's prompt schedule alone). Nothing for other models."""
        from openwan.pipelines.routing import is_demo
        if is_demo(self.variant.name):
            from openwan.demo.world import warn_outside_world
            for part in prompt.split("|"):
                warn_outside_world(part.strip())

    def resolve_sampling(self, negative_prompt=None, sample_steps=None, sample_shift=None, guide_scale=None,
                         sample_solver=None, seed=None, *, width: int = 0, height: int = 0) -> Sampling:
        """Fill every sampling argument left None from the variant's defaults; draw a seed if none."""
        if isinstance(guide_scale, (tuple, list)):
            raise ValueError(f"guide_scale {tuple(guide_scale)}: a pair (low-noise, high-noise) is for the Wan 2.2 "
                             f"A14B two-expert models; {self.variant.name} takes one number")
        d = self.defaults()
        return Sampling(steps=sample_steps or d.steps,
                        shift=self.default_shift(width, height) if sample_shift is None else sample_shift,
                        guide_scale=d.guide_scale if guide_scale is None else guide_scale,
                        solver=sample_solver or d.solver,
                        negative_prompt=self.default_negative_prompt() if negative_prompt is None else negative_prompt,
                        seed=resolve_seed(seed))

    def new_settings(self, step_cache=None, **kw) -> dict:
        """The settings record of a call, with its step cache and an empty ``stats`` to be filled."""
        from openwan.cache import parse_step_cache
        spec = parse_step_cache(step_cache)
        d = self.settings(**kw)
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
            leaves = self.offload == "sequential" if module is self.dit else (
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
                for p, e in zip(todo, te.encode(todo)):
                    self._prompt_memo[p] = e.float()
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
    def denoiser(self, cond: Conditioning, guidance: Guidance, step_cache=None, windows=None):
        """The model call of a run: the guided :class:`~openwan.denoiser.Denoiser` and, composed over it
        here (the one place wrappers are applied), long-video windows ((plan, per-window conditionings))
        and the step cache."""
        from openwan.cache import step_cache_wrapper
        d = Denoiser(self.dit, cond, guidance)
        if windows is not None:
            from openwan.long_video import Windowed
            d = Windowed(d, *windows)
        wrap = step_cache_wrapper(step_cache)
        return d if wrap is None else wrap(d)

    def make_job(self, settings: dict, start: torch.Tensor, cond: Conditioning, sp: Sampling, *,
                 cfg_batch: bool = True, sigmas: Optional[torch.Tensor] = None, step_cache=None,
                 **output) -> Job:
        """A :class:`Job` from the prepared pieces (``sigmas`` defaults to the solver's grid)."""
        if sigmas is None:
            sigmas = self.preset_sigmas(sp, settings)
        if sigmas is None:
            sigmas = sampling.sigmas_for(sp.solver, sp.steps, sp.shift)
        # re-noising solvers draw from their own stream, derived from the seed but apart from the initial noise
        renoise_seed = (sp.seed * 6364136223846793005 + 1442695040888963407) % 2**63
        generator = torch.Generator("cpu").manual_seed(renoise_seed)
        return Job(settings, start, cond, Guidance(sp.guide_scale, cfg_batch), sigmas, sp.solver, step_cache,
                   generator=generator, **output)

    def run(self, job: Job, on_step: Optional[Callable] = None,
            cancelled: Optional[Callable[[], bool]] = None) -> torch.Tensor:
        """The denoising loop: ``job.start`` -> a clean latent [C, F, H, W] (float32).

        ``on_step(step, x, x0)`` is called after every step (:class:`openwan.sampling.Step`, the new sample,
        the model's x0 prediction); ``cancelled()`` is checked before every step and raises
        :class:`Cancelled` when it returns True. ``job.stats`` gets ``denoise`` seconds and the DiT forward
        counts.
        """
        if job.long is not None and job.long.method == "continue":
            from openwan.pipelines.long import run_continued
            return run_continued(self, job, on_step, cancelled)
        windows = None if job.long is None else (job.long.plan, job.window_conds)
        d = self.denoiser(job.cond, job.guidance, job.step_cache, windows)
        n_steps = len(job.sigmas) - 1
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=n_steps, desc="denoising", unit="step", leave=False)
        t0 = time.perf_counter()

        def check():
            if cancelled is not None and cancelled():
                raise Cancelled("generation cancelled")

        def hook(step, x, x0):
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{(time.perf_counter() - t0) / (step.i + 1):.2f}s/step")
            if on_step is not None:
                on_step(step, x, x0)
            if step.i + 1 < step.n:
                check()

        try:
            check()
            with self.resident(self.dit), torch.inference_mode():
                needed = bar is not None or on_step is not None or cancelled is not None
                out = sampling.run(d, job.start, job.sigmas, job.solver, on_step=hook if needed else None,
                                   post_step=job.post_step, generator=job.generator)
        finally:
            if bar is not None:
                bar.close()
            job.stats["denoise"] = round(time.perf_counter() - t0, 4)
            job.stats.update(d.stats)
        return out

    def generate(self, job: Job, callback: Optional[Callable] = None,
                 cancelled: Optional[Callable[[], bool]] = None) -> GenerationOutput:
        """run + complete; ``callback(i, t, x)`` after every step (``t`` the integer timestep)."""
        on_step = None if callback is None else (lambda step, x, x0: callback(step.i, int(step.t), x))
        return self.complete(job, self.run(job, on_step, cancelled))

    def complete(self, job: Job, latent: torch.Tensor) -> GenerationOutput:
        """Decode and write the result of a run (the job's output options)."""
        return self.finish(latent[:, job.drop_frames:], job.settings, job.output_type, job.output_path,
                           job.overwrite, fps=job.fps, return_frames=job.return_frames, tile=job.tile)

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
               fps: Optional[float] = None, return_frames: bool = True, tile=None) -> GenerationOutput:
        """Decode, optionally write the file (frames streamed straight into the writer), and return.

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
            for chunk in self.decode_frames(latent, stats, tile):
                if return_frames:
                    kept.append(chunk)
                yield chunk

        path = None
        if output_path is not None:
            output_path = Path(output_path)
            if settings.get("frame_num", 2) == 1 or output_path.suffix.lower() == ".png":
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
        d.update({k: v for k, v in kw.items() if v is not None})
        return d
