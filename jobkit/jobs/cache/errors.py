"""Why a cache warm stopped for good: a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    └── CacheWarmSetupError  the payload names a warmer, cache or keys that cannot work or are not allowed
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["CacheWarmSetupError"]


class CacheWarmSetupError(Unrecoverable):
    """The warmer, cache, keys or patterns in the payload cannot work or are not allowed; nothing was written."""
