"""`create=False`: a SQLite backend that opens an existing jobkit database and never makes a file or a directory
(what `jobkit status` and the other admin commands use, so a typo in a path is an error, not a new database)."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

import jobkit
from jobkit.backends import from_url
from jobkit.backends.sqlite import SQLiteBackend
from jobkit.errors import ConfigError
from jobkit.models import Job


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.mark.parametrize("where", ["missing/dir/jobs.db", "jobs.db"])
async def test_a_missing_database_is_a_clear_error_and_nothing_is_made(tmp_path: Path, where: str) -> None:
    backend = SQLiteBackend(url_of(tmp_path / where), create=False)
    with pytest.raises(ConfigError, match=r"no SQLite database at .*jobs\.db.*check the URL"):
        await backend.open()
    assert list(tmp_path.iterdir()) == []


async def test_an_existing_database_opens_and_reads(tmp_path: Path) -> None:
    writer = SQLiteBackend(url_of(tmp_path / "jobs.db"))
    await writer.open()
    await writer.add([Job(id="j1", name="t", queue="q", data=1)])
    await writer.close()
    reader = from_url(url_of(tmp_path / "jobs.db"), create=False)
    try:
        job = await reader.get("q", "j1")
        assert job is not None and job.data == 1
    finally:
        await reader.close()


async def test_a_sqlite_file_that_is_not_jobkits_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    before = other.read_bytes()
    backend = SQLiteBackend(url_of(other), create=False)
    with pytest.raises(ConfigError, match="not a jobkit database"):
        await backend.open()
    assert other.read_bytes() == before
    with sqlite3.connect(other) as conn:
        assert [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["notes"]


async def test_connect_without_create_falls_back_to_no_new_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REDIS_URL that does not answer falls back to the SQLite default; without create, not to a new one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBKIT_URL", raising=False)
    monkeypatch.delenv("JOBKIT_REQUIRE_REDIS", raising=False)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    with pytest.raises(ConfigError, match="no SQLite database"):
        await jobkit.connect(create=False)
    assert list(tmp_path.iterdir()) == []
