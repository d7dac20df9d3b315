"""Training-free step caching: skip DiT work whose result can be predicted from the last computed step.

    pipe("a red circle", step_cache="default")            # the recommended method and threshold
    pipe("a red circle", step_cache="easycache")          # a method at its recommended threshold
    pipe("a red circle", step_cache="magcache:0.12")      # NAME:THRESHOLD
    pipe("a red circle", step_cache="easycache:0.5:0.4")  # NAME:THRESHOLD:WARMUP (fraction of steps computed first)
    pipe("a red circle", step_cache="none")               # the default: every step computed

Methods (each a small class, its rule and paper in its docstring):

* ``easycache`` (:class:`~openwan.caches.easycache.EasyCache`): above the DiT, skips the whole guided call;
  no calibration.
* ``teacache``, ``magcache``, ``fbcache`` (:mod:`openwan.caches.blocks`): inside the DiT's three-part
  forward, skip the transformer blocks and reuse their residual. TeaCache and MagCache read a per-model
  calibration (:mod:`openwan.caches.store`; the demo model's ships with the package; ``python -m
  openwan.caches calibrate`` computes one from an uncached run); FirstBlockCache needs none.
* ``plan`` (:class:`~openwan.caches.blocks.PlannedCache`): inside the DiT, a fixed schedule reusing the
  fraction T of the steps (the same forward count on every model); no calibration.

The speed/quality curve of every method over thresholds is in docs/performance.md
(``python benchmarks/step_cache.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

from openwan.caches.blocks import BlockCache, FirstBlockCache, MagCache, PlannedCache, TeaCache
from openwan.caches.easycache import EasyCache

__all__ = ["EasyCache", "TeaCache", "MagCache", "FirstBlockCache", "PlannedCache", "BlockCache", "StepCacheSpec",
           "parse_step_cache", "step_cache_wrapper", "STEP_CACHES", "DEFAULT_STEP_CACHE"]

# name -> (wrapper class (inner, threshold), recommended threshold): measured in docs/performance.md
STEP_CACHES: dict[str, tuple[Callable, float]] = {
    "easycache": (EasyCache, 0.1),
    "teacache": (TeaCache, 0.1),
    "magcache": (MagCache, 0.09),
    "fbcache": (FirstBlockCache, 0.12),
    "plan": (PlannedCache, 0.5),
}
# what "default" (the bare `--step_cache`) turns on: the setting that met the target best (docs/performance.md)
DEFAULT_STEP_CACHE = "plan:0.5"


@dataclass(frozen=True)
class StepCacheSpec:
    name: str
    threshold: float
    warmup: Optional[float] = None        # None: the method's own

    def __str__(self) -> str:
        return f"{self.name}:{self.threshold:g}" + ("" if self.warmup is None else f":{self.warmup:g}")


def parse_step_cache(spec: Union[str, StepCacheSpec, None]) -> Optional[StepCacheSpec]:
    """``None``/"none" -> None; "default" -> :data:`DEFAULT_STEP_CACHE`; "NAME" -> its recommended threshold; "NAME:T" -> that threshold;
    "NAME:T:W" -> also the warm-up (the fraction of the steps always computed at the start)."""
    if spec is None or isinstance(spec, StepCacheSpec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"step_cache must be 'none', a method name ({', '.join(STEP_CACHES)}) or NAME:THRESHOLD, "
                         f"got {spec!r}")
    text = spec.strip().lower()
    if text in ("", "none", "off"):
        return None
    if text == "default":
        return parse_step_cache(DEFAULT_STEP_CACHE)
    name, _, thr = text.partition(":")
    thr, _, warm = thr.partition(":")
    if name not in STEP_CACHES:
        raise ValueError(f"unknown step cache {name!r}: choose 'none', 'default' ({DEFAULT_STEP_CACHE}) or one of "
                         f"{', '.join(STEP_CACHES)} (optionally NAME:THRESHOLD, e.g. magcache:0.12)")
    if not thr:
        return StepCacheSpec(name, STEP_CACHES[name][1])
    try:
        value = float(thr)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"step cache threshold must be a number >= 0 (e.g. {name}:"
                         f"{STEP_CACHES[name][1]:g}), got {thr!r}")
    warmup = None
    if warm:
        try:
            warmup = float(warm)
        except ValueError:
            warmup = float("nan")
        if not 0 <= warmup < 1:
            raise ValueError(f"step cache warm-up must be a fraction of the steps in [0, 1) (e.g. {name}:"
                             f"{STEP_CACHES[name][1]:g}:0.2), got {warm!r}")
    return StepCacheSpec(name, value, warmup)


def step_cache_wrapper(spec) -> Optional[Callable]:
    """A factory ``inner -> wrapped denoiser`` for a step-cache spec, or None for no cache."""
    parsed = parse_step_cache(spec)
    if parsed is None:
        return None
    cls = STEP_CACHES[parsed.name][0]
    if parsed.warmup is None:
        return lambda inner: cls(inner, parsed.threshold)
    return lambda inner: cls(inner, parsed.threshold, warmup=parsed.warmup)
