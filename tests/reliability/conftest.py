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
