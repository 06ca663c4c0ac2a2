"""Backends for the built-in job tests: a fresh one per test, with embedded workers stopped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobkit.backends import Backend, from_url
from jobkit.run import shutdown


async def _open(kind: str, tmp_path: Path) -> Backend:
    backend = from_url("memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}")
    await backend.open()
    return backend


@pytest.fixture(params=["memory", "sqlite"])
async def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each test that takes it runs on the memory and the SQLite backend."""
    backend = await _open(request.param, tmp_path)
    try:
        yield backend
    finally:
        await shutdown()
        await backend.close()

