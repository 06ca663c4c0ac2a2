"""Backends for the built-in job tests (fresh per test, embedded workers stopped afterwards), their file root, and
the databases they write to (a SQLite file in the root; a fresh schema of the run's PostgreSQL database)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit.jobs
from jobkit.backends import Backend, from_url
from jobkit.jobs import register_database
from jobkit.run import shutdown
from tests.postgres import run_database


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



@pytest.fixture(scope="session")
def pg_run_database() -> Iterator[str]:
    """This test run's own PostgreSQL database (dropped at the end)."""
    yield from run_database()


class Db:
    """A database as the tests see it: the name payloads use, and plain SQL on it (sqlite3 or asyncpg)."""

    def __init__(self, kind: str, ref: str, path: Path | None = None, conn: Any = None) -> None:
        self.kind, self.ref, self.path, self.conn = kind, ref, path, conn

    async def execute(self, sql: str) -> None:
        if self.conn is not None:
            await self.conn.execute(sql)
            return
        with sqlite3.connect(self.path) as c:
            c.executescript(sql)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.conn is not None:
            return [tuple(r) for r in await self.conn.fetch(sql)]
        with sqlite3.connect(self.path) as c:
            return c.execute(sql).fetchall()


@pytest.fixture
async def pg(pg_run_database: str) -> AsyncIterator[Db]:
    """A fresh schema of the run's database, registered as the database "pg" (search_path points at it)."""
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_run_database, timeout=10)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(f'SET search_path = "{schema}"')
    register_database("pg", f"{pg_run_database}?search_path={schema}")
    try:
        yield Db("postgresql", "pg", conn=conn)
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """Each test that takes it runs against a SQLite file in the file root and against PostgreSQL."""
    if request.param == "sqlite":
        return Db("sqlite", "sqlite:///warehouse.db", path=tmp_path / "warehouse.db")
    pg: Db = request.getfixturevalue("pg")
    return pg
