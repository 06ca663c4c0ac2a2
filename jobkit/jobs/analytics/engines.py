"""Where a partition's SQL runs: DuckDB over Parquet/CSV files, the source database itself (SQLite, PostgreSQL),
or, without DuckDB, CSV files loaded into an in-memory SQLite.

DuckDB reads SQLite and PostgreSQL only through extensions it downloads at run time, which an offline worker
cannot, so a database source is aggregated where it lives: only the aggregated rows travel.
"""

from __future__ import annotations

import abc
import asyncio
import csv
import datetime as dt
import decimal
import glob
import importlib
import math
import re
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import Any

from .._paths import file_roots, inside_roots
from .._registry import shorten
from ..db.databases import resolve_database
from ..db.readers import Reader, open_reader
from ..exports.errors import ExportSetupError
from ..exports.queries import bind, registered_query
from .errors import AggregateSetupError
from .models import Aggregate
from .sql import Dialect, Query, TimeColumn

__all__ = ["Engine", "duckdb_module", "open_engine"]

_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".gz": "csv"}
_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}([ T])\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]00:?00)?$")
_NUMERIC = ("int", "float", "double", "real", "decimal", "numeric", "hugeint", "bigint", "smallint", "tinyint")


def _numbered(n: int) -> str:
    """SQLite's numbered parameter: the source's parameters come first in the list, but not first in the text."""
    return f"?{n}"


def duckdb_module() -> ModuleType | None:
    """DuckDB, when `jobkit[analytics]` is installed."""
    try:
        return importlib.import_module("duckdb")
    except ImportError:
        return None


def plain(value: Any) -> Any:
    """A value as JSON holds it: decimals as numbers, dates as ISO text."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Percentile:
    """SQLite's missing continuous percentile (as PostgreSQL's percentile_cont and DuckDB's quantile_cont)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.q = 0.5

    def step(self, value: Any, q: float) -> None:
        if value is not None:
            self.values.append(value)
            self.q = q

    def finalize(self) -> float | None:
        if not self.values:
            return None
        v = sorted(self.values)
        pos = self.q * (len(v) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(v) - 1)
        return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))


class Engine(abc.ABC):
    """One source opened for one job: its columns, how its time column compares, and queries on it."""

    name: str
    dialect: Dialect
    source: Query  # what FROM names: a table, a registered query, or the files

    def __init__(self, p: Aggregate) -> None:
        self.p = p
        self.columns: list[str] = []

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, read the columns, and find how the time column compares."""

    @abc.abstractmethod
    async def rows(self, q: Query) -> list[list[Any]]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    time: TimeColumn

    def _check_time(self) -> str:
        col = self.p.time_column
        if col not in self.columns:
            raise AggregateSetupError(f"time_column {shorten(col)!r} is not a column of the source (its columns:"
                                      f" {', '.join(self.columns)})")
        return self.dialect.quote(col)

    def _time_of_type(self, type_name: str) -> TimeColumn:
        """The time column by its database type (DuckDB's or PostgreSQL's name, lower case)."""
        col, t = self._check_time(), type_name.lower()
        if t in ("timestamptz", "timestamp with time zone"):
            return TimeColumn(col, "aware")
        if t.startswith(("timestamp", "datetime")):
            return TimeColumn(col, "aware" if self.dialect.name == "postgresql" else "naive_utc")
        if t == "date":
            return TimeColumn(f"CAST({col} AS TIMESTAMP)", "naive_utc")
        if t in ("varchar", "text"):
            return TimeColumn(f"CAST({col} AS TIMESTAMPTZ)", "aware")
        if any(n in t for n in _NUMERIC):
            return TimeColumn(col, "epoch_ms" if self.p.epoch == "ms" else "epoch_s")
        raise AggregateSetupError(f"time_column {self.p.time_column!r} is of type {type_name}: it must hold"
                                  " timestamps, dates, ISO text or epoch numbers")

    def _time_of_sample(self, sample: Any) -> TimeColumn:
        """SQLite's time column by a stored value: epoch numbers, or ISO text (compared as text when it is UTC)."""
        col = self._check_time()
        if isinstance(sample, int | float):
            return TimeColumn(col, "epoch_ms" if self.p.epoch == "ms" else "epoch_s")
        if sample is None or isinstance(sample, str):
            m = _ISO_UTC.match(sample or "")
            if sample is None or m:
                return TimeColumn(col, "iso_t" if m and m.group(1) == "T" else "iso_space")
            return TimeColumn(f"CAST(round((julianday({col}) - 2440587.5) * 86400000.0) AS INTEGER)", "epoch_ms")
        raise AggregateSetupError(f"time_column {self.p.time_column!r} holds {type(sample).__name__} values: it must"
                                  " hold ISO text or epoch numbers")


class DatabaseEngine(Engine):
    """A table or registered query of a SQLite or PostgreSQL database, aggregated by that database."""

    reader: Reader

    def __init__(self, p: Aggregate) -> None:
        super().__init__(p)
        try:
            if p.query is not None:
                rq = registered_query(p.query)
                self.db = resolve_database(rq.database, AggregateSetupError)
                if p.source is not None and p.source != rq.database:
                    raise AggregateSetupError(f"query {p.query!r} reads {rq.database!r}, not {shorten(p.source)!r}")
            else:
                assert p.source is not None and p.table is not None
                self.db = resolve_database(p.source, AggregateSetupError)
                self.db.check_table(p.table, AggregateSetupError)
        except ExportSetupError as exc:
            raise AggregateSetupError(str(exc)) from None
        self.name = self.db.kind
        self.reader = open_reader(self.db, AggregateSetupError)
        self.dialect = Dialect(self.db.kind, _numbered if self.db.kind == "sqlite" else self.reader.placeholder)

    async def open(self) -> None:
        await self.reader.open()
        conn = self.reader.conn  # type: ignore[attr-defined]
        if self.db.kind == "sqlite":
            conn.create_aggregate("jobkit_percentile", 2, _Percentile)
        else:
            await conn.execute("SET TIME ZONE 'UTC'")
        self.source = await self._source()
        if self.db.kind == "sqlite":
            await self.reader.start(f"SELECT * FROM {self.source.sql} LIMIT 0", self.source.params)
            self.columns = list(self.reader.columns)
            col = self._check_time()
            sample = await self.rows(Query(f"SELECT {col} FROM {self.source.sql} WHERE {col} IS NOT NULL LIMIT 1",
                                           list(self.source.params)))
            self.time = self._time_of_sample(sample[0][0] if sample else None)
        else:
            statement = await conn.prepare(f"SELECT * FROM {self.source.sql} LIMIT 0")
            types = {a.name: a.type.name for a in statement.get_attributes()}
            self.columns = list(types)
            self._check_time()
            self.time = self._time_of_type(types[self.p.time_column])

    async def _source(self) -> Query:
        p = self.p
        if p.table is not None:
            if "." in p.table and self.db.kind == "sqlite":
                raise AggregateSetupError(f"SQLite table names have no schema part: {shorten(p.table)!r}")
            if await self.reader.table_columns(p.table) is None:
                raise AggregateSetupError(f"table {shorten(p.table)!r} does not exist in {self.db.name}")
            return Query(self.reader.quote(p.table))
        assert p.query is not None
        try:
            sql, values = bind(registered_query(p.query).sql, p.params, self.dialect.placeholder)
        except ExportSetupError as exc:
            raise AggregateSetupError(f"query {p.query!r}: {exc}") from None
        return Query(f"({sql}\n) AS src", values)

    async def rows(self, q: Query) -> list[list[Any]]:
        await self.reader.start(q.sql, q.params)
        out: list[list[Any]] = []
        while batch := await self.reader.fetch(10_000):
            out += [[plain(v) for v in row] for row in batch]
        return out

    async def close(self) -> None:
        await self.reader.close()


def resolve_files(p: Aggregate) -> tuple[list[Path], str]:
    """The payload's files (globs expanded inside the roots), each inside the roots, and their format."""
    assert p.files is not None
    found: list[Path] = []
    for pattern in p.files:
        if any(c in pattern for c in "*?["):
            base = inside_roots(re.split(r"[*?\[]", pattern, maxsplit=1)[0] or ".", "files", AggregateSetupError)
            root = file_roots()[0]
            matches = sorted(glob.glob(str(root / pattern), recursive=True))
            hits = [inside_roots(m, "files", AggregateSetupError) for m in matches]
            if not hits:
                raise AggregateSetupError(f"files {shorten(pattern)!r} matches no file (in {base.parent})")
            found += hits
        else:
            path = inside_roots(pattern, "files", AggregateSetupError)
            if not path.is_file():
                raise AggregateSetupError(f"file {shorten(pattern)!r} does not exist in the file roots")
            found.append(path)
    kinds = {p.file_format or _EXTENSIONS.get(f.suffix.lower()) for f in found}
    if None in kinds or len(kinds) != 1:
        raise AggregateSetupError("files must all be Parquet (.parquet) or all CSV (.csv, .tsv, .csv.gz); give"
                                  " file_format when their names do not say")
    return list(dict.fromkeys(found)), str(kinds.pop())


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


_shared: dict[int, Any] = {}  # id(duckdb module) -> this process's in-memory DuckDB (opening one costs ~50 ms)
_described: dict[tuple[str, tuple[tuple[str, int, int], ...]], dict[str, str]] = {}  # columns of files as they were


def _database(duckdb: ModuleType) -> Any:
    db = _shared.get(id(duckdb))
    if db is None:
        db = _shared[id(duckdb)] = duckdb.connect()
        db.execute("SET GLOBAL TimeZone = 'UTC'")  # text without an offset is UTC, as everywhere in jobkit
    return db


class DuckDBEngine(Engine):
    """Parquet or CSV files read by DuckDB (`jobkit[analytics]`): a cursor per job on one in-memory database per
    process, and the files' columns read once while the files are unchanged."""

    name = "duckdb"
    dialect = Dialect("duckdb", lambda n: f"${n}")

    def __init__(self, p: Aggregate, duckdb: ModuleType) -> None:
        super().__init__(p)
        self.duckdb = duckdb
        self.files, self.format = resolve_files(p)
        reader = "read_parquet" if self.format == "parquet" else "read_csv"
        self.source = Query(f"{reader}([{', '.join(map(_literal, self.files))}]) AS src")

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.conn = _database(self.duckdb).cursor()
        stats = tuple((str(f), st.st_size, st.st_mtime_ns) for f in self.files for st in [f.stat()])
        key = (self.source.sql, stats)
        types = _described.get(key)
        if types is None:
            try:
                described = self.conn.execute(f"DESCRIBE SELECT * FROM {self.source.sql}").fetchall()
            except self.duckdb.Error as exc:
                raise AggregateSetupError(f"DuckDB cannot read the files: {str(exc).splitlines()[0]}") from None
            types = _described[key] = {row[0]: row[1] for row in described}
            if len(_described) > 256:
                _described.pop(next(iter(_described)))
        self.columns = list(types)
        self._check_time()
        self.time = self._time_of_type(types[self.p.time_column])

    async def rows(self, q: Query) -> list[list[Any]]:
        return await asyncio.to_thread(self._rows, q)

    def _rows(self, q: Query) -> list[list[Any]]:
        try:
            return [[plain(v) for v in row] for row in self.conn.execute(q.sql, q.params).fetchall()]
        except (self.duckdb.BinderException, self.duckdb.ConversionException, self.duckdb.InvalidInputException
                ) as exc:
            raise AggregateSetupError(f"DuckDB refused the aggregation: {str(exc).splitlines()[0]}") from None

    async def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            await asyncio.to_thread(conn.close)


class CsvSQLiteEngine(Engine):
    """CSV files loaded into an in-memory SQLite when DuckDB is not installed (numbers stored as numbers)."""

    name = "sqlite"
    dialect = Dialect("sqlite", _numbered)
    source = Query('"src"')

    def __init__(self, p: Aggregate) -> None:
        super().__init__(p)
        self.files, fmt = resolve_files(p)
        if fmt != "csv" and p.engine == "sqlite":
            raise AggregateSetupError("engine 'sqlite' reads CSV files only: use engine 'auto' or 'duckdb' for Parquet")
        if fmt != "csv":
            raise AggregateSetupError("reading Parquet files needs DuckDB: install jobkit[analytics] on the worker"
                                      " (pip install 'jobkit[analytics]'), or give CSV files")

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.conn.create_aggregate("jobkit_percentile", 2, _Percentile)  # type: ignore[arg-type]
        for path in self.files:
            self._load(path)
        self._check_time()
        col = self.dialect.quote(self.p.time_column)
        sample = self.conn.execute(f"SELECT {col} FROM src WHERE {col} IS NOT NULL LIMIT 1").fetchone()
        self.time = self._time_of_sample(sample[0] if sample else None)

    def _load(self, path: Path) -> None:
        import gzip

        opener: Any = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t" if ".tsv" in path.name.lower() else ",")
            header = next(rows, None)
            if not header:
                raise AggregateSetupError(f"{path.name} is empty: a CSV file starts with a header row")
            if not self.columns:
                self.columns = header
                cols = ", ".join(f"{self.dialect.quote(c)} NUMERIC" for c in header)  # '12.5' stored as 12.5
                self.conn.execute(f"CREATE TABLE src ({cols})")
            elif header != self.columns:
                raise AggregateSetupError(f"{path.name} has other columns than the first file: {', '.join(header)}")
            marks = ", ".join("?" * len(header))
            self.conn.executemany(f"INSERT INTO src VALUES ({marks})", ([v if v != "" else None for v in row]
                                                                        for row in rows))

    async def rows(self, q: Query) -> list[list[Any]]:
        return await asyncio.to_thread(lambda: [[plain(v) for v in row]
                                                for row in self.conn.execute(q.sql, q.params).fetchall()])

    async def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()


def open_engine(p: Aggregate) -> Engine:
    """The engine for `p`'s source (not yet opened); see the module docstring for which one runs."""
    if p.files is None:
        return DatabaseEngine(p)
    duckdb = duckdb_module() if p.engine in ("auto", "duckdb") else None
    if duckdb is not None:
        return DuckDBEngine(p, duckdb)
    if p.engine == "duckdb":
        raise AggregateSetupError("engine 'duckdb' is not installed on the worker: pip install 'jobkit[analytics]'")
    return CsvSQLiteEngine(p)
