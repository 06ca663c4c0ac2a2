"""Backends for the built-in job tests (fresh per test, embedded workers stopped afterwards), and their file root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import jobkit.jobs
from jobkit.backends import Backend, from_url
from jobkit.run import shutdown


@pytest.fixture(autouse=True)
def file_roots(tmp_path: Path) -> Iterator[Path]:
    """Built-in jobs read and write only inside their file roots: here, the test's own directory."""
    jobkit.jobs.configure(file_roots=[tmp_path])
    try:
        yield tmp_path
    finally:
        jobkit.jobs.configure(file_roots=None)


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

