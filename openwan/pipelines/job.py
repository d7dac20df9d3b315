"""The pieces of one pipeline call around the model: checking its size, length and prompt, the resolved
:class:`Sampling` settings and seed, the initial noise, the prepared :class:`Job`, the
:class:`GenerationOutput` and the record written with an output.

Every name here is also importable from :mod:`openwan.pipelines.base`, where the pipelines look for it.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from openwan.configs import Variant
from openwan.denoiser import Conditioning, Guidance

PathLike = Union[str, Path]
OUTPUT_TYPES = ("uint8", "np", "pt", "pil", "latent")


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
        raise ValueError(f"frame_num must be of the form 4n+1 (1, 5, 9, 13, ...); got {frame_num!r}, "
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


def renoise_generator(seed: int) -> torch.Generator:
    """The stream re-noising solvers draw from: derived from the call's seed, apart from its initial noise."""
    return torch.Generator("cpu").manual_seed((seed * 6364136223846793005 + 1442695040888963407) % 2**63)


def make_noise(shape: Sequence[int], seed: int, device) -> torch.Tensor:
    """fp32 noise from a CPU generator, so a seed gives the same video on any device."""
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device)


def refine_noise(shape: Sequence[int], seed: int, device) -> torch.Tensor:
    """The noise a long video's refinement pass re-noises with (openwan.pipelines.long.refine): derived from the call's
    seed, apart from its initial noise and the re-noising solvers' stream."""
    return make_noise(shape, (seed * 2862933555777941757 + 3037000493) % 2**63, device)


def add_stats(into: dict, stats: dict) -> None:
    """Add one denoising run's numeric ``stats`` (seconds, DiT forward counts) into ``into``, seconds to 4 decimals."""
    for key, value in stats.items():
        if isinstance(value, (int, float)):
            into[key] = round(into.get(key, 0) + value, 4)


@dataclass
class GenerationOutput:
    """diffusers-style result: ``frames[0]`` is the first video ([F, H, W, 3] or as requested); for uint8 and
    "np" output ``frames`` is one array (1, F, H, W, 3), diffusers' shape; a list of one video otherwise."""
    frames: Any
    settings: dict = field(default_factory=dict)
    path: Optional[Path] = None
    latents: Optional[torch.Tensor] = None


def duration_text(seconds: float) -> str:
    """A time left, as a person reads it: 42s, 3m05s, 2h10m."""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


class TimeLeft:
    """How long a call of several denoising runs (a ``continue`` long video's windows, then its refinement pass) has
    left to denoise, for its progress bars: work counted in window forwards (a step of the pass runs every window of
    its plan, a step of a window one), at the rate of the work this process has done so far (what an earlier run
    kept is counted done, not timed). ``clock``: seconds (time.perf_counter)."""

    def __init__(self, total: int, clock: Optional[Callable[[], float]] = None):
        self.clock = clock or time.perf_counter
        self.total, self.done, self.here, self.start = total, 0, 0, self.clock()

    def skip(self, units: int) -> None:
        """Work an earlier run finished (its kept windows and steps)."""
        self.done += units

    def add(self, units: int) -> None:
        """Work this process just did."""
        self.done += units
        self.here += units

    def seconds(self) -> Optional[float]:
        """The seconds left at the rate so far (None before any work here)."""
        if self.here == 0:
            return None
        return max(0, self.total - self.done) * (self.clock() - self.start) / self.here

    def text(self) -> str:
        """", ~1m05s of denoising left" for a bar's postfix ('' before any work)."""
        left = self.seconds()
        if left is None:
            return ""
        return f", ~{duration_text(left)} of denoising left"


class StepBar:
    """A run's progress bar (tqdm): a step of ``total``, its postfix the mean seconds a step so far and, with a
    :class:`TimeLeft`, the call's time left (``units`` of its work a step)."""

    def __init__(self, total: int, label: str, time_left: Optional[TimeLeft] = None, units: int = 1):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=label, unit="step", leave=False)
        self.time_left, self.units, self.t0 = time_left, units, time.perf_counter()

    def update(self, steps: int) -> None:
        """One more step done, ``steps`` the run's steps so far (the mean is over them)."""
        self.bar.update(1)
        post = f"{(time.perf_counter() - self.t0) / steps:.2f}s/step"
        if self.time_left is not None:
            self.time_left.add(self.units)
            post += self.time_left.text()
        self.bar.set_postfix_str(post)

    def close(self) -> None:
        self.bar.close()


class Cancelled(RuntimeError):
    """Raised by :meth:`WanPipeline.run` when its ``cancelled()`` check returns True."""


@dataclass
class Job:
    """A prepared generation: every input validated and encoded, ready for the denoising loop.

    ``start`` is the sample the loop starts from (noise, or a noised latent for video-to-video) on
    ``sigmas[0]``; ``drop_frames`` leading latent frames are removed before decoding (VACE's reference
    images); ``settings`` is the record written with the output (its ``stats`` filled as the job runs);
    ``post_step(step, x, x0)`` may return a modified sample after each step (e.g. re-imposing known frames);
    ``generator`` feeds re-noising solvers (seeded from the call's seed, so "consistency" is reproducible);
    ``dit`` a DiT to run instead of the pipeline's (a continuation expert's window of a long video); ``parts``
    jobs of their own whose latents are merged into this one's (a scene composed of objects drawn one at a time:
    openwan.pipelines.compose); ``given`` and ``prefix`` the source of an extended video (its tail's latents, carried
    into the first window, and its frames, written as the output's first: openwan.pipelines.extend).
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
    dit: Any = None
    parts: Optional[list] = None
    keep_places: bool = False        # a composed scene's objects stay where drawn (their pictures placed them)
    pixels: Any = None               # the video as uint8 [F, H, W, 3] when the run made it (a composed scene)
    label: str = "denoising"         # the progress bar's name (a long video's: which window)
    given: Any = None                # an extended video's source latents (openwan.pipelines.extend.Given)
    prefix: Any = None               # ... and its frames, the output's first (openwan.pipelines.extend.Prefix)
    keeps_progress: bool = True      # writing an output, keep its progress to go on from (openwan.pipelines.resume)
    steps_kept: Any = None           # a sub-run's steps, kept in its call's progress file (resume.Partial)
    time_left: Optional[TimeLeft] = None   # a sub-run's call's time left, shown on its bar (a long video's windows)
    step_units: int = 1              # ... and the work of one of its steps in window forwards (the pass: its windows)

    @property
    def stats(self) -> dict:
        return self.settings["stats"]


FILE_STATS = ("dit_forwards", "dit_forwards_skipped", "dit_forwards_high", "dit_forwards_low")   # written into outputs


def file_stats(stats: dict) -> dict:
    """The deterministic part of a run's stats (:data:`FILE_STATS`: its DiT forward counts), as an output's record
    keeps them; seconds differ between runs."""
    return {k: v for k, v in stats.items() if k in FILE_STATS}


def file_record(settings: dict) -> dict:
    """The metadata written with an output: the settings, with only the deterministic stats."""
    rec = copy.deepcopy(settings)
    if isinstance(rec.get("stats"), dict):
        rec["stats"] = file_stats(rec["stats"])
    return {"openwan": rec}
