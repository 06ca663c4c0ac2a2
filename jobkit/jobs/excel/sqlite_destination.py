"""`sqlite:///file.db?table=name`: rows into a table (created from the row model when missing).

The file must lie inside the worker's file roots; a relative path is taken in the first root.

Each batch and the import's progress marker commit in one transaction, so a resumed import neither
loses nor repeats rows, whatever moment the worker died at.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from pydantic import BaseModel

from ...config import mask_url
from .._paths import inside_roots
from .._registry import shorten
from .destinations import Destination
from .errors import ImportSetupError, RowsRejected
from .rows import base_types

__all__ = ["MARKERS", "SQLiteDestination"]

MARKERS = "_jobkit_imports"  # job id -> the import's state, committed with each batch
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQL_TYPES: dict[Any, str] = {bool: "INTEGER", int: "INTEGER", float: "REAL", decimal.Decimal: "NUMERIC", str: "TEXT",
                              dt.date: "TEXT", dt.datetime: "TEXT", dt.time: "TEXT"}


def _parse(url: str) -> tuple[Path, str]:
    prefix = "sqlite:///"
    rest = url[len(prefix):] if url.lower().startswith(prefix) else ""
    path, _, query = rest.partition("?")
    tables = parse_qs(query).get("table", [])
    if not path or len(tables) != 1:
        raise ImportSetupError(f"write a SQLite destination as 'sqlite:///path/file.db?table=name'"
                               f" (sqlite:////abs/path.db for an absolute path), not {shorten(mask_url(url))!r}")
    table = tables[0]
    if not _IDENT.match(table):
        raise ImportSetupError(f"table name {shorten(table)!r} must be letters, digits and underscores, not led by a"
                               " digit")
    return inside_roots(unquote(path), "the SQLite destination", ImportSetupError), table


def _sql_type(annotation: Any) -> str:
    kinds = base_types(annotation)
    return _SQL_TYPES.get(next(iter(kinds)), "TEXT") if len(kinds) == 1 else "TEXT"


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


class SQLiteDestination(Destination):
    """One connection, used from worker threads one call at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path, self.table = _parse(url)
        self.conn: sqlite3.Connection | None = None
        self.job_id = ""
        self.fields: list[str] = []
        self._insert = ""

    async def open(self, model: type[BaseModel], job_id: str) -> dict[str, Any] | None:
        self.job_id = job_id
        self.fields = list(model.model_fields)
        bad = [f for f in self.fields if not _IDENT.match(f)]
        if bad:
            raise ImportSetupError(f"fields {bad} of {model.__name__} cannot be SQLite column names")
        return await asyncio.to_thread(self._open, model)

    def _open(self, model: type[BaseModel]) -> dict[str, Any] | None:
        if not self.path.parent.is_dir():
            raise ImportSetupError(f"the folder of the SQLite destination does not exist: create {self.path.parent}")
        self.conn = conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        columns = ", ".join(f'"{n}" {_sql_type(f.annotation)}' for n, f in model.model_fields.items())
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{self.table}" ({columns})')
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{MARKERS}" (job_id TEXT PRIMARY KEY, "table" TEXT NOT NULL,'
                     " state TEXT NOT NULL, updated_at REAL NOT NULL)")
        have = {row[1] for row in conn.execute(f'PRAGMA table_info("{self.table}")')}
        missing = [f for f in self.fields if f not in have]
        if missing:
            raise ImportSetupError(f"table {self.table!r} in {self.path} exists without column(s) {', '.join(missing)}"
                                   f" of {model.__name__}: add them, or import into a new table")
        names = ", ".join(f'"{f}"' for f in self.fields)
        self._insert = f'INSERT INTO "{self.table}" ({names}) VALUES ({", ".join("?" * len(self.fields))})'
        row = conn.execute(f'SELECT state FROM "{MARKERS}" WHERE job_id = ?', (self.job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    async def write(self, rows: Sequence[BaseModel], state: dict[str, Any]) -> None:
        values = [tuple(_cell(d[f]) for f in self.fields) for d in (r.model_dump(mode="json") for r in rows)]
        await asyncio.to_thread(self._write, values, json.dumps(state))

    def _write(self, values: list[tuple[Any, ...]], state: str) -> None:
        conn = self.conn
        assert conn is not None, "open() first"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self._insert, values)
            conn.execute(f'INSERT OR REPLACE INTO "{MARKERS}" VALUES (?, ?, ?, ?)',
                         (self.job_id, self.table, state, time.time()))
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                why = f"table {self.table!r} refused a batch ({exc}); none of its rows were written"
                raise RowsRejected(why) from exc
            raise

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await asyncio.to_thread(conn.close)
