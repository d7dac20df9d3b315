"""Kept for imports: the step caches live in :mod:`openwan.caches`."""
from openwan.caches import (DEFAULT_STEP_CACHE, STEP_CACHES, BlockCache, EasyCache, FirstBlockCache,  # noqa: F401
                            MagCache, StepCacheSpec, TeaCache, parse_step_cache, step_cache_wrapper)
from openwan.caches import __all__  # noqa: F401
