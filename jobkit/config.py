"""Which backend to use: the URL from the caller, JOBKIT_URL or REDIS_URL, else SQLite at .jobkit/jobs.db."""

from __future__ import annotations

import asyncio
import logging
import os
import weakref

from .backends import Backend, from_url
from .errors import ConfigError
from .urls import mask_url

__all__ = ["BackendLike", "DEFAULT_URL", "connect", "get_backend", "mask_url", "resolve_url", "shared_backend"]

DEFAULT_URL = "sqlite:///.jobkit/jobs.db"
BackendLike = Backend | str | None

log = logging.getLogger("jobkit")
_warned: set[str] = set()
# Backends hold connections bound to an event loop, so the cache is per loop (memory:// is one store per process).
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Backend]] = weakref.WeakKeyDictionary()
_memory: dict[str, Backend] = {}


def resolve_url(url: str | None = None) -> tuple[str, bool]:
    """(url, came_from_env_redis): the explicit URL, else JOBKIT_URL, else REDIS_URL, else the default."""
    if url:
        return url, False
    if os.environ.get("JOBKIT_URL"):
        return os.environ["JOBKIT_URL"], False
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], True
    return DEFAULT_URL, False


def _require_redis() -> bool:
    return os.environ.get("JOBKIT_REQUIRE_REDIS", "").strip().lower() in ("1", "true", "yes")


async def connect(url: str | None = None, *, create: bool = True) -> Backend:
    """Open a new backend for `url` (default: JOBKIT_URL, REDIS_URL, then SQLite at .jobkit/jobs.db).

    When the URL comes from REDIS_URL and that Redis does not answer, warn once and use the SQLite
    default instead, unless JOBKIT_REQUIRE_REDIS=1, which makes it an error. `create=False` opens an
    existing SQLite database only, and makes no file or directory.
    """
    resolved, from_redis_env = resolve_url(url)
    backend = from_url(resolved, create=create)
    try:
        await backend.open()
    except ConfigError:
        if not from_redis_env or _require_redis():
            raise
        if resolved not in _warned:
            _warned.add(resolved)
            log.warning(
                "REDIS_URL=%s does not answer; jobs go to the local SQLite backend %s instead "
                "(set JOBKIT_REQUIRE_REDIS=1 to make this an error)", mask_url(resolved), DEFAULT_URL,
            )
        backend = from_url(DEFAULT_URL, create=create)
        await backend.open()
    return backend


async def get_backend(backend: BackendLike = None) -> Backend:
    """The backend to use for `backend=`: itself, or the process's shared one for a URL (or the default)."""
    if isinstance(backend, Backend):
        await backend.open()
        return backend
    key = backend or ""
    if key.startswith("memory:"):
        if key not in _memory:
            _memory[key] = await connect(key)
        return _memory[key]
    cache = _by_loop.setdefault(asyncio.get_running_loop(), {})
    if key not in cache:
        backend = await connect(key or None)
        if key in cache:  # a concurrent first call connected while we did: keep one, close ours
            await backend.close()
        else:
            cache[key] = backend
    backend = cache[key]
    await backend.open()  # one `shared_backend` made, and that may not have answered yet
    return backend


def shared_backend(url: str) -> Backend:
    """The process's backend for `url` on this loop, made (not opened) if there is none yet: `degrade=` keeps one
    for a Redis that may not answer, so its handles and forwarder reach it once it does."""
    cache = _by_loop.setdefault(asyncio.get_running_loop(), {})
    if url not in cache:
        cache[url] = from_url(url)
    return cache[url]


async def close_all() -> None:
    """Close the backends this process opened for the running loop (tests, notebooks shutting down)."""
    cache = _by_loop.pop(asyncio.get_running_loop(), {})
    for b in cache.values():
        await b.close()
