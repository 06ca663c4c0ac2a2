"""The cache warm job: values computed by registered warmers, written to Redis (or a registered cache) with a TTL."""

from .errors import CacheWarmSetupError
from .models import CacheWarm, CacheWarmReport
from .sinks import CacheSink, RedisSink, register_cache
from .task import cache_warm
from .warmers import register_cache_warmer

__all__ = [
    "CacheSink", "CacheWarm", "CacheWarmReport", "CacheWarmSetupError", "RedisSink", "cache_warm", "register_cache",
    "register_cache_warmer",
]
