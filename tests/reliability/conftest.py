"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from private_redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with an append-only file fsynced on every write, so a restart keeps the data."""
    with RedisServer(tmp_path, persist=True) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend URL that worker processes can share: a SQLite file, or the (emptied) test Redis db."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    from tests.conftest import REDIS_TEST_URL, open_redis

    await (await open_redis()).close()
    return REDIS_TEST_URL
