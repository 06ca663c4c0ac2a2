"""Reading rows out of a database as a stream, in one consistent snapshot: a read-only SQLite connection, or a
read-only REPEATABLE READ transaction with a server-side cursor on PostgreSQL.

The caller builds the SQL (with `placeholder(n)` for the database's parameter style), counts the rows and
fetches them batch by batch, so memory stays flat however many rows there are.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from .databases import Database
from .pg_types import converter
from .postgres import connect, quote

__all__ = ["Reader", "open_reader"]

_TRANSIENT = {"08", "40", "53", "57", "58"}  # SQLSTATE classes: connection, rollback, resources, operator, system


class Reader(abc.ABC):
    """One snapshot of one database: `start` a query, `fetch` its rows in batches, `close`."""

    def __init__(self, db: Database, error: type[Exception]) -> None:
        self.db, self.error = db, error
        self.columns: list[str] = []

    @abc.abstractmethod
    def placeholder(self, n: int) -> str:
        """How the n-th (1-based) parameter is written in SQL."""

    @abc.abstractmethod
    def quote(self, name: str) -> str: ...

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, read-only, and begin the snapshot every later read sees."""

    @abc.abstractmethod
    async def table_columns(self, table: str) -> list[str] | None:
        """The columns of `table` in order, or None if there is no such table (or view)."""

    @abc.abstractmethod
    async def count(self, sql: str, params: Sequence[Any]) -> int: ...

    @abc.abstractmethod
    async def start(self, sql: str, params: Sequence[Any]) -> list[str]:
        """Run `sql`; return its column names. Rows then come from `fetch`."""

    @abc.abstractmethod
    async def fetch(self, n: int) -> list[tuple[Any, ...]]:
        """Up to `n` more rows; an empty list at the end."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class SQLiteReader(Reader):
    conn: sqlite3.Connection | None = None
    cursor: sqlite3.Cursor | None = None

    def placeholder(self, n: int) -> str:
        return "?"

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    async def open(self) -> None:
        path = Path(self.db.target)
        if not path.is_file():
            raise self.error(f"database {self.db.name} does not exist: there is nothing to read")
        self.conn = await asyncio.to_thread(self._connect, path)

    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")
        return conn

    async def table_columns(self, table: str) -> list[str] | None:
        assert self.conn is not None
        rows = await asyncio.to_thread(lambda: self.conn.execute(  # type: ignore[union-attr]
            f"PRAGMA table_info({self.quote(table)})").fetchall())
        return [r[1] for r in rows] or None

    async def count(self, sql: str, params: Sequence[Any]) -> int:
        assert self.conn is not None
        with self._refused():
            row = await asyncio.to_thread(lambda: self.conn.execute(  # type: ignore[union-attr]
                f"SELECT count(*) FROM ({sql}\n)", list(params)).fetchone())
        return int(row[0])

    async def start(self, sql: str, params: Sequence[Any]) -> list[str]:
        assert self.conn is not None
        with self._refused():
            self.cursor = await asyncio.to_thread(self.conn.execute, sql, list(params))
        self.columns = [d[0] for d in self.cursor.description or ()]
        return self.columns

    @contextlib.contextmanager
    def _refused(self) -> Iterator[None]:
        """SQL the database refuses for good (syntax, unknown names, a write) as `error`; a busy database stays
        an error worth a retry."""
        try:
            yield
        except (sqlite3.OperationalError, sqlite3.ProgrammingError, sqlite3.IntegrityError) as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            raise self.error(f"{self.db.name} refused the query: {exc}") from None

    async def fetch(self, n: int) -> list[tuple[Any, ...]]:
        assert self.cursor is not None
        return await asyncio.to_thread(self.cursor.fetchmany, n)

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await asyncio.to_thread(conn.close)


class PostgresReader(Reader):
    conn: Any = None
    cursor: Any = None

    def placeholder(self, n: int) -> str:
        return f"${n}"

    def quote(self, name: str) -> str:
        return ".".join(quote(part) for part in name.split("."))

    async def open(self) -> None:
        self.conn = await connect(self.db, self.error)
        for kind in ("json", "jsonb"):  # JSON values as Python objects, as a JSONL export writes them
            await self.conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        self.transaction = self.conn.transaction(isolation="repeatable_read", readonly=True)
        await self.transaction.start()

    async def table_columns(self, table: str) -> list[str] | None:
        oid = await self.conn.fetchval("SELECT to_regclass($1)::oid", self.quote(table))
        if oid is None:
            return None
        rows = await self.conn.fetch("SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT"
                                     " attisdropped ORDER BY attnum", oid)
        return [r[0] for r in rows]

    async def count(self, sql: str, params: Sequence[Any]) -> int:
        async with self._refused():
            statement = await self.conn.prepare(f"SELECT count(*) FROM ({sql}\n) AS q")
            return int(await statement.fetchval(*self._args(statement, params)))

    async def start(self, sql: str, params: Sequence[Any]) -> list[str]:
        async with self._refused():
            statement = await self.conn.prepare(sql)
            self.columns = [a.name for a in statement.get_attributes()]
            self.cursor = await statement.cursor(*self._args(statement, params))
        return self.columns

    @contextlib.asynccontextmanager
    async def _refused(self) -> AsyncIterator[None]:
        """SQL the server refuses for good (syntax, unknown names, privileges, a write, bad data) as `error`;
        connection trouble, serialization failures and resource shortages stay errors worth a retry."""
        import asyncpg

        try:
            yield
        except asyncpg.PostgresError as exc:
            if (exc.sqlstate or "")[:2] in _TRANSIENT:
                raise
            raise self.error(f"{self.db.name} refused the query ({type(exc).__name__}: {exc})") from None

    def _args(self, statement: Any, params: Sequence[Any]) -> list[Any]:
        """JSON parameter values as the types PostgreSQL inferred for them ("2024-03-01" for a date, ...)."""
        args = []
        for n, (kind, value) in enumerate(zip(statement.get_parameters(), params, strict=True), 1):
            try:
                args.append(_parameter(kind.name, value))
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise self.error(f"parameter {n} of the query ({kind.name}): {exc}") from None
        return args

    async def fetch(self, n: int) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.cursor.fetch(n)]

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.close(timeout=5)


def _parameter(typname: str, value: Any) -> Any:
    if value is None or typname in ("json", "jsonb"):  # the connection's JSON codec encodes them
        return value
    if typname.startswith("_") and isinstance(value, list):  # an array: convert each element
        element = converter(typname[1:], False)
        return [v if element is None or v is None else element(v) for v in value]
    convert = converter(typname, False)
    return value if convert is None else convert(value)


def open_reader(db: Database, error: type[Exception]) -> Reader:
    """A reader for `db` (not yet opened)."""
    return SQLiteReader(db, error) if db.kind == "sqlite" else PostgresReader(db, error)
