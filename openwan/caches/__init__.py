"""Training-free step caching: skip DiT work whose result can be predicted from the last computed step.

    pipe("a red circle", step_cache="easycache")          # a method at its recommended threshold
    pipe("a red circle", step_cache="magcache:0.12")      # NAME:THRESHOLD
    pipe("a red circle", step_cache="none")               # the default: every step computed

Methods (each a small class, its rule and paper in its docstring):

* ``easycache`` (:class:`~openwan.caches.easycache.EasyCache`): above the DiT, skips the whole guided call;
  no calibration.
* ``teacache``, ``magcache``, ``fbcache`` (:mod:`openwan.caches.blocks`): inside the DiT's three-part
  forward, skip the transformer blocks and reuse their residual. TeaCache and MagCache read a per-model
  calibration (:mod:`openwan.caches.store`; the demo model's ships with the package; ``python -m
  openwan.caches calibrate`` computes one from an uncached run); FirstBlockCache needs none.

The speed/quality curve of every method over thresholds is in docs/performance.md
(``python benchmarks/step_cache.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

from openwan.caches.blocks import BlockCache, FirstBlockCache, MagCache, TeaCache
from openwan.caches.easycache import EasyCache

__all__ = ["EasyCache", "TeaCache", "MagCache", "FirstBlockCache", "BlockCache", "StepCacheSpec",
           "parse_step_cache", "step_cache_wrapper", "STEP_CACHES", "DEFAULT_STEP_CACHE"]

# name -> (wrapper class (inner, threshold), recommended threshold): measured in docs/performance.md
STEP_CACHES: dict[str, tuple[Callable, float]] = {
    "easycache": (EasyCache, 0.1),
    "teacache": (TeaCache, 0.2),
    "magcache": (MagCache, 0.12),
    "fbcache": (FirstBlockCache, 0.1),
}
DEFAULT_STEP_CACHE = "easycache"      # what the bare `--step_cache` turns on


@dataclass(frozen=True)
class StepCacheSpec:
    name: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.name}:{self.threshold:g}"


def parse_step_cache(spec: Union[str, StepCacheSpec, None]) -> Optional[StepCacheSpec]:
    """``None``/"none" -> None; "NAME" -> its recommended threshold; "NAME:T" -> that threshold."""
    if spec is None or isinstance(spec, StepCacheSpec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"step_cache must be 'none', a method name ({', '.join(STEP_CACHES)}) or NAME:THRESHOLD, "
                         f"got {spec!r}")
    text = spec.strip().lower()
    if text in ("", "none", "off"):
        return None
    name, _, thr = text.partition(":")
    if name not in STEP_CACHES:
        example = f"{DEFAULT_STEP_CACHE}:{STEP_CACHES[DEFAULT_STEP_CACHE][1] / 2:g}"
        raise ValueError(f"unknown step cache {name!r}: choose 'none' or one of {', '.join(STEP_CACHES)} "
                         f"(optionally NAME:THRESHOLD, e.g. {example})")
    if not thr:
        return StepCacheSpec(name, STEP_CACHES[name][1])
    try:
        value = float(thr)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"step cache threshold must be a number >= 0 (e.g. {name}:"
                         f"{STEP_CACHES[name][1]:g}), got {thr!r}")
    return StepCacheSpec(name, value)


def step_cache_wrapper(spec) -> Optional[Callable]:
    """A factory ``inner -> wrapped denoiser`` for a step-cache spec, or None for no cache."""
    parsed = parse_step_cache(spec)
    if parsed is None:
        return None
    cls = STEP_CACHES[parsed.name][0]
    return lambda inner: cls(inner, parsed.threshold)
