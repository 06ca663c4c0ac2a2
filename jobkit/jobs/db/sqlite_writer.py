"""SQLite table writer: multi-row statements sized to SQLite's parameter limit, conflicts resolved in a staging table.

A batch is first tried as plain INSERTs inside a savepoint: when no row's key is taken (a first load), that is
all. If the table refuses it (a key taken, or repeated in the batch), the savepoint is rolled back and the
batch goes through a temporary staging table where duplicates are settled and the conflicts counted; later
batches of the attempt go there directly. One connection, used from worker threads one call at a time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import itertools
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .conflicts import BatchCounts
from .writer import MARKER_DAYS, MARKERS, ColumnSpec, Converted, StateFn, TableWriter, ValueRefused, check_identifier

__all__ = ["SQLiteWriter", "variable_limit"]

STAGE = "_jobkit_stage"
_TYPES = {"integer": "INTEGER", "float": "REAL", "decimal": "NUMERIC", "text": "TEXT", "boolean": "INTEGER",
          "date": "TEXT", "datetime": "TEXT", "time": "TEXT", "json": "TEXT"}
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def variable_limit(conn: sqlite3.Connection) -> int:
    """How many `?` parameters one statement may hold on this SQLite (999 before 3.32, 32766 after, unless built
    otherwise)."""
    limit = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
    if limit is not None and hasattr(conn, "getlimit"):
        return int(conn.getlimit(limit))
    return 999 if sqlite3.sqlite_version_info < (3, 32, 0) else 32766


def _q(name: str) -> str:
    return f'"{name}"'


def sqlite_value(value: Any) -> Any:
    """A JSON or Python value as SQLite stores it: JSON text for objects and lists, ISO text for dates."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, int | float | str | bytes):
        return value
    raise ValueError(f"a {type(value).__name__} cannot be stored in SQLite")


class SQLiteWriter(TableWriter):
    """Writes into a table of a SQLite file; see the module docstring for the two paths a batch takes."""

    conn: sqlite3.Connection | None = None

    async def open(self, columns: Sequence[str], marker: str, create: Sequence[ColumnSpec] | None = None
                   ) -> dict[str, Any] | None:
        if "." in self.table:
            raise self.errors.setup(f"SQLite table names have no schema part: {self.table!r}")
        check_identifier(self.table, "table name", self.errors.setup)
        self.columns = [check_identifier(c, "column name", self.errors.setup) for c in columns]
        self.marker = marker
        return await asyncio.to_thread(self._open, create)

    def _open(self, create: Sequence[ColumnSpec] | None) -> dict[str, Any] | None:
        path = Path(self.db.target)
        if not path.parent.is_dir():
            raise self.errors.setup(f"the folder of the SQLite database {self.db.name} does not exist: create"
                                    f" {path.parent}")
        if not create and not path.is_file():  # never leave an empty database file behind a refusal
            raise self.errors.setup(f"the SQLite database {self.db.name} does not exist: create it, with the table"
                                    f" {self.table!r}")
        self.conn = conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        info = conn.execute(f"PRAGMA table_info({_q(self.table)})").fetchall()
        if not info:
            if not create:
                raise self.errors.setup(f"table {self.table!r} does not exist in {self.db.name}: create it first"
                                        " (with the unique key conflicts are judged by)")
            self._create(create)
            info = conn.execute(f"PRAGMA table_info({_q(self.table)})").fetchall()
        declared = {row[1]: row[2] for row in info}
        missing = [c for c in self.columns if c not in declared]
        if missing:
            raise self.errors.setup(f"table {self.table!r} in {self.db.name} exists without column(s)"
                                    f" {', '.join(missing)} (its columns: {', '.join(declared)}): add them, or write"
                                    " into another table")
        primary = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
        unique, collations = self._unique_indexes(primary)
        self._resolve_key(primary, unique)
        self.per_statement = max(1, variable_limit(conn) // max(1, len(self.columns)))
        self._prepare_stage(declared, collations)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {MARKERS} (job_id TEXT PRIMARY KEY, \"table\" TEXT NOT NULL,"
                     " state TEXT NOT NULL, updated_at REAL NOT NULL)")
        conn.execute(f"DELETE FROM {MARKERS} WHERE updated_at < ?", (time.time() - MARKER_DAYS * 86400,))
        row = conn.execute(f"SELECT state FROM {MARKERS} WHERE job_id = ?", (self.marker,)).fetchone()
        return json.loads(row[0]) if row else None

    def _create(self, create: Sequence[ColumnSpec]) -> None:
        assert self.conn is not None
        cols = [f"{_q(check_identifier(c.name, 'column name', self.errors.setup))} {_TYPES[c.type]}" for c in create]
        if self.policy.key:
            cols.append(f"PRIMARY KEY ({', '.join(_q(k) for k in self.policy.key)})")
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {_q(self.table)} ({', '.join(cols)})")

    def _unique_indexes(self, primary: list[str]) -> tuple[list[frozenset[str]], dict[str, str]]:
        """The column sets of the table's full unique indexes (and its primary key), and each key column's collation."""
        assert self.conn is not None
        unique = [frozenset(primary)] if primary else []
        collations: dict[str, str] = {}
        for _, name, is_unique, _origin, partial in self.conn.execute(f"PRAGMA index_list({_q(self.table)})"):
            if not is_unique or partial:
                continue
            cols = [(r[2], r[4]) for r in self.conn.execute(f"PRAGMA index_xinfo({_q(name)})") if r[5] and r[2]]
            unique.append(frozenset(c for c, _ in cols))
            if set(self.policy.key or primary) == {c for c, _ in cols}:
                collations.update(dict(cols))
        return unique, collations

    def _prepare_stage(self, declared: dict[str, str], collations: dict[str, str]) -> None:
        """A temporary table of the written columns with the target's types (so values compare alike there)."""
        assert self.conn is not None
        def col(c: str) -> str:
            coll = collations.get(c, "BINARY")
            return f"{_q(c)} {declared[c]}" + ("" if coll.upper() == "BINARY" else f" COLLATE {coll}")
        self.conn.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")
        self.conn.execute(f"CREATE TEMP TABLE {STAGE} (_jk_ord INTEGER PRIMARY KEY,"
                          f" {', '.join(col(c) for c in self.columns)})")
        self._names = ", ".join(_q(c) for c in self.columns)
        self._direct_only = not self.key  # no key: nothing to settle, a refused batch is refused
        self._direct = True  # try plain INSERTs first, until a batch needs the staging table

    def convert(self, values: Sequence[Any]) -> tuple[Any, ...]:
        if _PLAIN.issuperset(map(type, values)):  # the common case, checked in C
            return tuple(values)
        out = []
        for name, v in zip(self.columns, values, strict=True):
            try:
                out.append(v if type(v) in _PLAIN else sqlite_value(v))
            except ValueError as exc:
                raise ValueRefused(name, str(exc)) from None
        return tuple(out)

    def convert_many(self, rows: Sequence[Sequence[Any]]) -> Converted:
        if _PLAIN.issuperset(map(type, itertools.chain.from_iterable(rows))):  # the common case, checked in C
            return list(map(tuple, rows)), []
        return super().convert_many(rows)

    async def write(self, rows: Sequence[tuple[Any, ...]], state: StateFn) -> BatchCounts:
        return await asyncio.to_thread(self._write, rows, state)

    def _write(self, rows: Sequence[tuple[Any, ...]], state: StateFn) -> BatchCounts:
        conn = self.conn
        assert conn is not None, "open() first"
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = self._insert_direct(rows) if self._direct else None
            if counts is None:
                self._direct = False
                self.staged_batches += 1
                counts = self._insert_staged(rows)
            conn.execute(f"INSERT OR REPLACE INTO {MARKERS} VALUES (?, ?, ?, ?)",
                         (self.marker, self.table, json.dumps(state(counts)), time.time()))
            conn.execute("COMMIT")
            return counts
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise self.errors.rejected(f"table {self.table!r} refused a batch ({exc}); none of its rows were"
                                           " written") from exc
            raise

    def _insert_many(self, into: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """INSERT `rows` into `into` in statements of as many rows as SQLite's parameter limit allows."""
        assert self.conn is not None
        one = "(" + ", ".join("?" * len(self.columns)) + ")"
        step = self.per_statement
        full = f"INSERT INTO {into} ({self._names}) VALUES " + ", ".join([one] * step)
        for i in range(0, len(rows), step):
            chunk = rows[i:i + step]
            sql = full if len(chunk) == step else f"INSERT INTO {into} ({self._names}) VALUES " + ", ".join(
                [one] * len(chunk))
            self.conn.execute(sql, list(itertools.chain.from_iterable(chunk)))

    def _insert_direct(self, rows: Sequence[tuple[Any, ...]]) -> BatchCounts | None:
        """Plain INSERTs in a savepoint; None (rolled back) when a key conflict means the batch needs staging."""
        assert self.conn is not None
        if self._direct_only:
            self._insert_many(_q(self.table), rows)
            return BatchCounts(inserted=len(rows))
        self.conn.execute("SAVEPOINT jobkit_direct")
        try:
            self._insert_many(_q(self.table), rows)
        except sqlite3.IntegrityError:
            self.conn.execute("ROLLBACK TO jobkit_direct")
            self.conn.execute("RELEASE jobkit_direct")
            return None
        self.conn.execute("RELEASE jobkit_direct")
        return BatchCounts(inserted=len(rows))

    def _insert_staged(self, rows: Sequence[tuple[Any, ...]]) -> BatchCounts:
        conn = self.conn
        assert conn is not None
        p, key = self.policy, self.key
        self._insert_many(f"temp.{STAGE}", rows)
        counts = BatchCounts(duplicates=self._settle_duplicates())
        staged = len(rows) - counts.duplicates
        target, cols = _q(self.table), self._names
        on = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in key)
        select = f"SELECT {cols} FROM temp.{STAGE} WHERE true ORDER BY _jk_ord"  # WHERE: SQLite upsert parsing
        try:
            if p.mode == "error":
                self._insert_checked(f"INSERT INTO {target} ({cols}) {select}", on)
                counts.inserted = staged
            elif p.mode == "skip" or not self.update:
                before = conn.total_changes
                conn.execute(f"INSERT INTO {target} ({cols}) {select} ON CONFLICT ({self._key_sql()}) DO NOTHING")
                counts.inserted = conn.total_changes - before
                counts.skipped = staged - counts.inserted
            else:
                (existing,) = conn.execute(f"SELECT count(*) FROM temp.{STAGE} s WHERE EXISTS (SELECT 1 FROM"
                                           f" {target} t WHERE {on})").fetchone()
                sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in self.update)
                changed = " OR ".join(f"{target}.{_q(c)} IS NOT excluded.{_q(c)}" for c in self.update)
                before = conn.total_changes
                conn.execute(f"INSERT INTO {target} ({cols}) {select} ON CONFLICT ({self._key_sql()}) DO UPDATE SET"
                             f" {sets} WHERE {changed}")
                changes = conn.total_changes - before
                counts.inserted = staged - existing
                counts.updated = changes - counts.inserted
                counts.skipped = existing - counts.updated
        finally:
            conn.execute(f"DELETE FROM temp.{STAGE}")
        return counts

    def _key_sql(self) -> str:
        return ", ".join(_q(k) for k in self.key)

    def _insert_checked(self, sql: str, on: str) -> None:
        """on_conflict="error": the INSERT, and when it fails on a taken key, a message naming that key."""
        assert self.conn is not None
        try:
            self.conn.execute(sql)
        except sqlite3.IntegrityError as exc:
            taken = self.conn.execute(f"SELECT {self._key_sql()} FROM temp.{STAGE} s WHERE EXISTS (SELECT 1 FROM"
                                      f" {_q(self.table)} t WHERE {on}) LIMIT 3").fetchall() if self.key else []
            if not taken:
                raise
            shown = "; ".join(_show_key(self.key, k) for k in taken)
            raise self.errors.rejected(f"table {self.table!r} already holds rows with the key of rows in this batch"
                                       f" ({shown}) and on_conflict='error': none of the batch's rows were written."
                                       " Use on_conflict='skip' or 'upsert' to resolve such conflicts") from exc

    def _settle_duplicates(self) -> int:
        """Rows sharing a key inside the batch: refused (duplicates="error"), or all but the first or last dropped."""
        if not self.key:
            return 0
        assert self.conn is not None
        k = self._key_sql()
        not_null = " AND ".join(f"{_q(c)} IS NOT NULL" for c in self.key)
        repeated = self.conn.execute(f"SELECT {k}, count(*) FROM temp.{STAGE} WHERE {not_null} GROUP BY {k}"
                                     " HAVING count(*) > 1 LIMIT 3").fetchall()
        if not repeated:
            return 0
        if self.policy.duplicates == "error":
            shown = "; ".join(f"{_show_key(self.key, r[:-1])} ({r[-1]} rows)" for r in repeated)
            raise self.errors.rejected(f"rows sharing a key appear more than once in one batch ({shown}) and"
                                       " duplicates='error': none of the batch's rows were written. Set duplicates="
                                       "'first' or 'last' to keep one of them")
        pick = "min" if self.policy.duplicates == "first" else "max"
        before = self.conn.total_changes
        self.conn.execute(f"DELETE FROM temp.{STAGE} WHERE {not_null} AND _jk_ord NOT IN (SELECT {pick}(_jk_ord)"
                          f" FROM temp.{STAGE} WHERE {not_null} GROUP BY {k})")
        return self.conn.total_changes - before

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await asyncio.to_thread(conn.close)


def _show_key(key: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in zip(key, values, strict=False))
