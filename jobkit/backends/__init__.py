"""Backends by URL scheme: memory://, sqlite:///path, redis:// and rediss:// (TLS), alone or +cluster."""

from __future__ import annotations

from ..errors import ConfigError
from ..urls import mask_url
from .base import Ask, Backend, ChildLink, ClaimResult, FlowSpec, Offer, Record, Spend

__all__ = ["Ask", "Backend", "ChildLink", "ClaimResult", "FlowSpec", "Offer", "Record", "Spend", "from_url"]

SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+cluster", "rediss+cluster")
REDIS_SCHEMES = SCHEMES[2:]


def from_url(url: str, *, create: bool = True) -> Backend:
    """A backend for `url`, not yet opened. Raises ConfigError for a URL it cannot use.

    `create=False`: a SQLite backend opens an existing database only (admin commands; a typo is no new database).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"malformed backend URL {mask_url(url)!r}: use memory://, sqlite:///path/to/jobs.db or redis://host:6379/0"
        )
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url, create=create)
    if scheme in REDIS_SCHEMES:
        from .redis import RedisBackend

        return RedisBackend(url)
    shown = mask_url(url)
    raise ConfigError(
        f"unknown backend URL scheme {shown.partition('://')[0]!r} in {shown!r}: use one of "
        + ", ".join(f"{s}://" for s in SCHEMES)
    )
