"""`jobkit.jobs.cache_warm`: the built-in task that precomputes cache values (low priority, 4 by default)."""

from __future__ import annotations

from ... import Context, task
from .._policy import ATTEMPTS, BACKOFF
from .models import CacheWarm, CacheWarmReport
from .warm import Warm

__all__ = ["cache_warm"]


@task(name="jobkit.jobs.cache_warm", queue="default", attempts=ATTEMPTS, backoff=BACKOFF, priority=4)
async def cache_warm(ctx: Context, payload: CacheWarm) -> CacheWarmReport:
    """Compute and write the values of `payload.keys` and `payload.patterns` with a registered warmer, skipping keys
    still fresh unless forced (see docs/cache_warm.md)."""
    return await Warm(ctx, payload).run()
