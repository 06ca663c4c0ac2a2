"""PostgreSQL table writer: binary COPY, conflicts settled in a temporary staging table with INSERT ... ON CONFLICT.

A batch is first COPYed straight into the table inside a savepoint: when no row's key is taken (a first load)
that is all, and it is the fastest way in. If the table refuses it, the savepoint is rolled back and the batch
is COPYed into a temporary table, where rows repeating a key are settled, then moved with one
`INSERT ... SELECT ... ON CONFLICT` whose RETURNING tells inserted rows from updated ones (`xmax = 0` marks a
row version this statement created); later batches of the attempt go that way directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from .conflicts import BatchCounts
from .pg_types import Converter, bulk_converter, converter, ready_types, str_only
from .postgres import connect, quote
from .writer import (
    MARKER_DAYS,
    MARKERS,
    ColumnSpec,
    Converted,
    StateFn,
    TableWriter,
    ValueRefused,
    check_identifier,
    split_table,
)

__all__ = ["PostgresWriter"]

STAGE = "_jobkit_stage"
_TYPES = {"integer": "bigint", "float": "double precision", "decimal": "numeric", "text": "text",
          "boolean": "boolean", "date": "date", "datetime": "timestamp", "time": "time", "json": "jsonb"}
_NO_EQUALITY = {"json", "xml", "point", "polygon", "box", "path", "circle", "line", "lseg"}  # compared as text

COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname,
       CASE WHEN a.attcollation <> t.typcollation THEN (SELECT quote_ident(c.collname) FROM pg_collation c
                                                         WHERE c.oid = a.attcollation) END
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
UNIQUE = """
SELECT i.indisprimary, array_agg(a.attname ORDER BY k.n)
FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indisprimary
"""


class PostgresWriter(TableWriter):
    """Writes into a table of a registered PostgreSQL database over one asyncpg connection."""

    conn: Any = None

    async def open(self, columns: Sequence[str], marker: str, create: Sequence[ColumnSpec] | None = None
                   ) -> dict[str, Any] | None:
        schema, name = split_table(self.table, self.errors.setup)
        self.columns = [check_identifier(c, "column name", self.errors.setup) for c in columns]
        self.marker = marker
        self.conn = conn = await connect(self.db, self.errors.setup)
        self.schema = schema or await conn.fetchval("SELECT current_schema()")
        self.name = name
        self.target = f"{quote(self.schema)}.{quote(name)}"
        oid = await conn.fetchval("SELECT to_regclass($1)::oid", self.target)
        if oid is None:
            if not create:
                raise self.errors.setup(f"table {self.table!r} does not exist in database {self.db.name!r}: create it"
                                        " first (with the unique key conflicts are judged by)")
            await self._create(create)
            oid = await conn.fetchval("SELECT to_regclass($1)::oid", self.target)
        info = {r[0]: r for r in await conn.fetch(COLUMNS, oid)}
        missing = [c for c in self.columns if c not in info]
        if missing:
            raise self.errors.setup(f"table {self.table!r} in database {self.db.name!r} exists without column(s)"
                                    f" {', '.join(missing)} (its columns: {', '.join(info)}): add them, or write into"
                                    " another table")
        indexes = await conn.fetch(UNIQUE, oid)
        primary = next((list(cols) for is_pk, cols in indexes if is_pk), [])
        self._resolve_key(primary, [frozenset(cols) for _, cols in indexes])
        self.types = {c: info[c][2] for c in self.columns}
        convs = [converter(self.types[c], self.text_values) for c in self.columns]
        self._checks: list[tuple[int, Converter, frozenset[type]]] = [
            (i, conv, ready_types(self.types[c], self.text_values))
            for i, (c, conv) in enumerate(zip(self.columns, convs, strict=True)) if conv is not None]
        stage_cols = ", ".join(f"{quote(c)} {info[c][1]}" + (f" COLLATE {info[c][3]}" if info[c][3] else "")
                               for c in self.columns)
        await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{STAGE}")
        await conn.execute(f"CREATE TEMP TABLE {STAGE} (_jk_ord integer, {stage_cols}) ON COMMIT DELETE ROWS")
        self._direct = True
        return await self._markers()

    async def _create(self, create: Sequence[ColumnSpec]) -> None:
        cols = [f"{quote(check_identifier(c.name, 'column name', self.errors.setup))} {_TYPES[c.type]}"
                for c in create]
        if self.policy.key:
            cols.append(f"PRIMARY KEY ({', '.join(quote(k) for k in self.policy.key)})")
        await self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self.target} ({', '.join(cols)})")

    async def _markers(self) -> dict[str, Any] | None:
        import asyncpg

        markers = f"{quote(self.schema)}.{MARKERS}"
        try:
            await self.conn.execute(f"CREATE TABLE IF NOT EXISTS {markers} (job_id text PRIMARY KEY, \"table\" text"
                                    " NOT NULL, state text NOT NULL, updated_at double precision NOT NULL)")
        except asyncpg.UniqueViolationError:
            pass  # another job created it at the same moment
        except asyncpg.InsufficientPrivilegeError as exc:
            raise self.errors.setup(f"cannot create {MARKERS} in schema {self.schema!r} of {self.db.name!r} ({exc}):"
                                    " grant the worker's role CREATE there, or create it yourself (job_id text"
                                    " PRIMARY KEY, \"table\" text, state text, updated_at double precision)") from None
        await self.conn.execute(f"DELETE FROM {markers} WHERE updated_at < $1", time.time() - MARKER_DAYS * 86400)
        self._save_marker = (f"INSERT INTO {markers} VALUES ($1, $2, $3, $4) ON CONFLICT (job_id) DO UPDATE SET"
                             " state = EXCLUDED.state, updated_at = EXCLUDED.updated_at")
        state = await self.conn.fetchval(f"SELECT state FROM {markers} WHERE job_id = $1", self.marker)
        return json.loads(state) if state else None

    def convert(self, values: Sequence[Any]) -> tuple[Any, ...]:
        out = list(values)
        for i, conv, ready in self._checks:
            v = out[i]
            if v is None or type(v) in ready:
                continue
            try:
                out[i] = conv(v)
            except (ValueError, TypeError, ArithmeticError) as exc:
                name = self.columns[i]
                raise ValueRefused(name, f"{exc} (the column is {self.types[name]})") from None
        return tuple(out)

    def convert_many(self, rows: Sequence[Sequence[Any]]) -> Converted:
        """Column by column: a column whose values all fit is checked in C and left alone, the others converted in
        one pass; a value that does not convert sends the batch through `convert`, row by row, to name it."""
        if not rows:
            return [], []
        columns = list(zip(*rows, strict=True))
        try:
            for i, conv, ready in self._checks:
                column = columns[i]
                if ready.issuperset(map(type, column)):
                    continue
                fast = bulk_converter(self.types[self.columns[i]])
                if fast is not None and str_only(column):
                    try:
                        columns[i] = tuple(map(fast, column))
                        continue
                    except ValueError:
                        pass  # not all in the plain form: the general converter below
                columns[i] = tuple(v if v is None or type(v) in ready else conv(v) for v in column)
        except (ValueError, TypeError, ArithmeticError):
            return super().convert_many(rows)
        return list(zip(*columns, strict=True)), []

    async def write(self, rows: Sequence[tuple[Any, ...]], state: StateFn) -> BatchCounts:
        import asyncpg

        conn = self.conn
        assert conn is not None, "open() first"
        try:
            async with conn.transaction():
                counts = await self._copy_direct(rows) if self._direct else None
                if counts is None:
                    self._direct = False
                    self.staged_batches += 1
                    counts = await self._insert_staged(rows)
                await conn.execute(self._save_marker, self.marker, self.table, json.dumps(state(counts)), time.time())
            return counts
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            raise self.errors.rejected(f"table {self.table!r} refused a batch ({type(exc).__name__}: {exc}"
                                       f"{_detail(exc)}); none of its rows were written") from None

    async def _copy_direct(self, rows: Sequence[tuple[Any, ...]]) -> BatchCounts | None:
        import asyncpg

        if not self.key:
            await self.conn.copy_records_to_table(self.name, schema_name=self.schema, columns=self.columns,
                                                  records=rows)
            return BatchCounts(inserted=len(rows))
        try:
            async with self.conn.transaction():  # a savepoint
                await self.conn.copy_records_to_table(self.name, schema_name=self.schema, columns=self.columns,
                                                      records=rows)
        except asyncpg.UniqueViolationError:
            return None
        return BatchCounts(inserted=len(rows))

    async def _insert_staged(self, rows: Sequence[tuple[Any, ...]]) -> BatchCounts:
        import asyncpg

        conn, p = self.conn, self.policy
        await conn.copy_records_to_table(STAGE, columns=["_jk_ord", *self.columns],
                                         records=[(i, *r) for i, r in enumerate(rows)])
        counts = BatchCounts(duplicates=await self._settle_duplicates())
        staged = len(rows) - counts.duplicates
        cols = ", ".join(quote(c) for c in self.columns)
        insert = f"INSERT INTO {self.target} AS t ({cols}) SELECT {cols} FROM pg_temp.{STAGE} ORDER BY _jk_ord"
        key = ", ".join(quote(k) for k in self.key)
        if p.mode == "error":
            try:
                async with conn.transaction():
                    await conn.execute(insert)
            except asyncpg.UniqueViolationError as exc:
                raise self.errors.rejected(f"table {self.table!r} already holds a row with the key of a row in this"
                                           f" batch{_detail(exc)} and on_conflict='error': none of the batch's rows"
                                           " were written. Use on_conflict='skip' or 'upsert' to resolve such"
                                           " conflicts") from None
            counts.inserted = staged
        elif p.mode == "skip" or not self.update:
            status = await conn.execute(f"{insert} ON CONFLICT ({key}) DO NOTHING")
            counts.inserted = int(status.split()[-1])
            counts.skipped = staged - counts.inserted
        else:
            sets = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in self.update)
            old = ", ".join(self._comparable("t", c) for c in self.update)
            new = ", ".join(self._comparable("EXCLUDED", c) for c in self.update)
            counts.inserted, counts.updated = await conn.fetchrow(
                f"WITH w AS ({insert} ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE ROW({old}) IS DISTINCT FROM"
                f" ROW({new}) RETURNING t.xmax = 0 AS fresh) SELECT count(*) FILTER (WHERE fresh),"
                " count(*) FILTER (WHERE NOT fresh) FROM w")
            counts.skipped = staged - counts.inserted - counts.updated
        return counts

    def _comparable(self, alias: str, column: str) -> str:
        ref = f"{alias}.{quote(column)}"
        return f"{ref}::text" if self.types[column] in _NO_EQUALITY else ref

    async def _settle_duplicates(self) -> int:
        """Rows sharing a key inside the batch: refused (duplicates="error"), or all but the first or last dropped."""
        key = ", ".join(quote(k) for k in self.key)
        not_null = " AND ".join(f"{quote(k)} IS NOT NULL" for k in self.key)
        repeated = await self.conn.fetch(f"SELECT {key}, count(*) FROM pg_temp.{STAGE} WHERE {not_null} GROUP BY"
                                         f" {key} HAVING count(*) > 1 LIMIT 3")
        if not repeated:
            return 0
        if self.policy.duplicates == "error":
            shown = "; ".join(", ".join(f"{k}={r[i]!r}" for i, k in enumerate(self.key)) + f" ({r[-1]} rows)"
                              for r in repeated)
            raise self.errors.rejected(f"rows sharing a key appear more than once in one batch ({shown}) and"
                                       " duplicates='error': none of the batch's rows were written. Set duplicates="
                                       "'first' or 'last' to keep one of them")
        order = "ASC" if self.policy.duplicates == "first" else "DESC"
        status = await self.conn.execute(
            f"DELETE FROM pg_temp.{STAGE} WHERE _jk_ord IN (SELECT _jk_ord FROM (SELECT _jk_ord, row_number() OVER"
            f" (PARTITION BY {key} ORDER BY _jk_ord {order}) AS n FROM pg_temp.{STAGE} WHERE {not_null}) d"
            " WHERE n > 1)")
        return int(status.split()[-1])

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.close(timeout=5)


def _detail(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    return f": {detail}" if detail else ""
