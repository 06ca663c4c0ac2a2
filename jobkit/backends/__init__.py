"""Backends by URL scheme: memory://, sqlite:///path, redis:// and rediss://."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigError
from .base import Backend, ClaimResult

__all__ = ["Backend", "ClaimResult", "from_url"]

SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+cluster")


def from_url(url: str) -> Backend:
    """A backend for `url`, not yet opened. Raises ConfigError for a URL it cannot use."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"malformed backend URL {url!r}: use memory://, sqlite:///path/to/jobs.db or redis://host:6379/0"
        )
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in ("redis", "rediss", "redis+cluster"):
        from .redis import RedisBackend

        return RedisBackend(url)
    raise ConfigError(
        f"unknown backend URL scheme {scheme!r} in {url!r}: use one of " + ", ".join(f"{s}://" for s in SCHEMES)
    )
