"""Caches a warm writes to, registered by the worker's code under a name: a Redis URL, or any `CacheSink`.

The payload names a cache (default "default"); it never carries an address.
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Callable, Sequence

from ... import ConfigError
from ...urls import mask_url
from .._registry import not_registered
from .errors import CacheWarmSetupError

__all__ = ["CacheSink", "RedisSink", "open_cache", "register_cache"]

SinkFactory = Callable[[], "CacheSink"]


class CacheSink(abc.ABC):
    """Where warmed values go. One instance per job attempt; `close` releases it."""

    @abc.abstractmethod
    async def ttls(self, keys: Sequence[str]) -> list[float | None]:
        """Seconds each key has left: None when it is missing, math.inf when it never expires."""

    @abc.abstractmethod
    async def write(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        """Store each (key, value, ttl seconds)."""

    @abc.abstractmethod
    def scan(self, pattern: str) -> AsyncIterator[str]:
        """The keys the cache holds that match the glob `pattern`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisSink(CacheSink):
    """A Redis database: PTTL and SET ... PX in one pipelined round trip per batch, SCAN for patterns."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(url)

    async def ttls(self, keys: Sequence[str]) -> list[float | None]:
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pttl(key)
            found = await pipe.execute()
        return [None if ms == -2 else math.inf if ms == -1 else ms / 1000 for ms in found]

    async def write(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, value, ttl in items:
                pipe.set(key, value, px=max(1, round(ttl * 1000)))
            await pipe.execute()

    async def scan(self, pattern: str) -> AsyncIterator[str]:
        async for key in self.client.scan_iter(match=pattern, count=1000):
            yield key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key

    async def close(self) -> None:
        await self.client.aclose()


_caches: dict[str, SinkFactory] = {}


def register_cache(name: str, target: str | SinkFactory) -> None:
    """Let payloads write to `target` as `cache=name`: a redis:// or rediss:// URL (it may hold a password), or a
    function returning a new `CacheSink` for each job."""
    if not name or not isinstance(name, str):
        raise ConfigError("a cache name is a plain word like 'default'")
    if isinstance(target, str):
        if not target.lower().startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"register_cache({name!r}, ...) takes a redis:// URL or a function returning a"
                              f" CacheSink, not {mask_url(target)!r}")
        url = target
        _caches[name] = lambda: RedisSink(url)
    elif callable(target):
        _caches[name] = target
    else:
        raise ConfigError(f"register_cache({name!r}, ...) takes a redis:// URL or a function returning a CacheSink")


def open_cache(name: str) -> CacheSink:
    factory = _caches.get(name)
    if factory is None:
        raise not_registered("cache", name, _caches, "jobkit.jobs.register_cache(name, 'redis://...')",
                             CacheWarmSetupError)
    return factory()
