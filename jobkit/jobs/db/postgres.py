"""Connecting to a registered PostgreSQL database through asyncpg (the `jobkit[postgres]` extra)."""

from __future__ import annotations

from typing import Any

from .databases import Database

__all__ = ["connect", "quote"]

CONNECT_TIMEOUT = 15.0


def quote(name: str) -> str:
    """An identifier quoted for SQL (names are checked to be plain identifiers before they get here)."""
    return '"' + name.replace('"', '""') + '"'


async def connect(db: Database, error: type[Exception]) -> Any:
    """An asyncpg connection to `db`; `error` (unrecoverable) when asyncpg is missing or the server refuses us for
    good (authentication, unknown database); other failures (server down) propagate, so the job is retried."""
    try:
        import asyncpg
    except ImportError:
        raise error(f"database {db.name!r} is PostgreSQL, which needs asyncpg: pip install 'jobkit[postgres]' where"
                    " the worker runs") from None
    try:
        return await asyncpg.connect(db.target, timeout=CONNECT_TIMEOUT)
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError,
            asyncpg.InvalidCatalogNameError, asyncpg.InsufficientPrivilegeError) as exc:
        raise error(f"PostgreSQL database {db.name!r} refused the connection ({type(exc).__name__}: {exc}): check"
                    " the URL the worker registered for it") from None
