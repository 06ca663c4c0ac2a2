"""The test PostgreSQL: the server on 127.0.0.1:5432 (or JOBKIT_TEST_PG_URL), a database of our own per test run.

Tests that need it are skipped when no server answers, unless JOBKIT_REQUIRE_POSTGRES=1 (CI), which makes
that a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import Iterator

import pytest

ADMIN_URL = os.environ.get("JOBKIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_postgres() -> bool:
    return os.environ.get("JOBKIT_REQUIRE_POSTGRES", "").strip().lower() in ("1", "true", "yes")


def database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _admin(sql: str) -> None:
    """Run `sql` on the server's admin database, on a thread of its own (a fixture may be set up inside a loop)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result(timeout=60)


def run_database() -> Iterator[str]:
    """Create a database for this test run, yield its URL, drop it afterwards."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        pytest.fail("asyncpg is missing: pip install -e '.[dev]'") if require_postgres() else pytest.skip("no asyncpg")
    name = f"jobkit_test_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - whatever failed, there is no usable server
        if require_postgres():
            pytest.fail(f"JOBKIT_REQUIRE_POSTGRES=1 but PostgreSQL at {ADMIN_URL} is unusable: {exc}")
        pytest.skip(f"PostgreSQL at {ADMIN_URL} is not available: {exc}")
    try:
        yield database_url(name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
