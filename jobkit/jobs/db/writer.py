"""The table writer both databases implement: rows in batches into one table, conflicts resolved, exactly once.

Each `write` is one transaction that also stores the job's marker (the state a resumed job continues from),
so a worker killed at any moment has either committed a batch with its marker or neither; `open` returns the
last marker, and the job takes it when it is further along than its own checkpoint.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .._registry import shorten
from .conflicts import BatchCounts, ConflictPolicy
from .databases import Database

__all__ = [
    "MARKERS", "MARKER_DAYS", "ColumnSpec", "Converted", "ErrorKinds", "StateFn", "TableWriter", "TypeName",
    "ValueRefused", "check_identifier", "open_writer", "split_table",
]

MARKERS = "_jobkit_imports"  # marker id (the job id) -> the job's state, committed with each of its batches
MARKER_DAYS = 30  # markers untouched this long are removed when a writer opens the database
TypeName = Literal["integer", "float", "decimal", "text", "boolean", "date", "datetime", "time", "json"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
StateFn = Callable[[BatchCounts], dict[str, Any]]  # the job's state once this batch is in, given its counts


class ValueRefused(ValueError):
    """A row's value that its column cannot take; `column` names the column."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


Converted = tuple[list[tuple[Any, ...]], list[tuple[int, ValueRefused]]]  # rows converted; (index, why) of the others


class ErrorKinds(NamedTuple):
    """The exceptions a writer raises, so each job keeps its own documented types."""

    setup: type[Exception]  # the table, columns or key cannot work: nothing was written
    rejected: type[Exception]  # the database refused a batch (a conflict under "error", a constraint): rolled back


@dataclass(frozen=True)
class ColumnSpec:
    """A column of a table the writer creates when it is missing (the Excel import's row model)."""

    name: str
    type: TypeName


def check_identifier(name: str, what: str, error: type[Exception]) -> str:
    """`name` if it is a plain SQL identifier (letters, digits, underscores); else `error`."""
    if not isinstance(name, str) or not _IDENT.match(name) or len(name) > 63:
        raise error(f"{what} {shorten(str(name))!r} must be letters, digits and underscores (not led by a digit, at"
                    " most 63 characters)")
    return name


def split_table(table: str, error: type[Exception]) -> tuple[str | None, str]:
    """`schema.table` or `table`, each part a plain identifier."""
    schema, dot, name = table.rpartition(".")
    check_identifier(name, "table name", error)
    if dot:
        check_identifier(schema, "schema name", error)
    return (schema or None), name


class TableWriter(abc.ABC):
    """Writes batches into `table` of `db` under `policy`; one instance per job attempt."""

    def __init__(self, db: Database, table: str, policy: ConflictPolicy, errors: ErrorKinds) -> None:
        self.db, self.table, self.policy, self.errors = db, table, policy, errors
        self.columns: list[str] = []
        self.key: list[str] = []  # the conflict key in force (the policy's, or the table's primary key)
        self.update: list[str] = []  # upsert: the columns a conflict updates
        self.staged_batches = 0  # batches that needed the staging path (a conflict or duplicate was possible)
        self.text_values = False  # values are the columns' text (a CSV file): json columns take them as JSON text

    @abc.abstractmethod
    async def open(self, columns: Sequence[str], marker: str, create: Sequence[ColumnSpec] | None = None
                   ) -> dict[str, Any] | None:
        """Check (or create, from `create`) the table, its columns and key; return the state last committed under
        `marker`, if any."""

    @abc.abstractmethod
    def convert(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """One row's values (in `columns` order) as the database takes them; ValueError naming the column if not."""

    def convert_many(self, rows: Sequence[Sequence[Any]]) -> Converted:
        """`convert` for a batch: the rows that convert, and (index, error) for those that do not."""
        out: list[tuple[Any, ...]] = []
        bad: list[tuple[int, ValueRefused]] = []
        for i, values in enumerate(rows):
            try:
                out.append(self.convert(values))
            except ValueRefused as exc:
                bad.append((i, exc))
        return out, bad

    @abc.abstractmethod
    async def write(self, rows: Sequence[tuple[Any, ...]], state: StateFn) -> BatchCounts:
        """Commit converted `rows` and, as the marker, `state(counts)` in one transaction; return the counts.

        `errors.rejected` (all rolled back) when the table refuses the batch."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection; safe to call twice, and after a failed open."""

    def _resolve_key(self, primary: Sequence[str], unique: Sequence[frozenset[str]]) -> None:
        """The key in force and the columns an upsert updates, checked against the table's unique constraints."""
        p, where = self.policy, f"table {self.table!r} in {self.db.name}"
        self.key = list(p.key) or list(primary)
        if p.needs_key and not self.key:
            raise self.errors.setup(f"{where} has no primary key, so on_conflict={p.mode!r} needs a key: give key=[...]"
                                    " naming columns of a unique index")
        missing = [k for k in self.key if k not in self.columns]
        if p.needs_key and missing:
            raise self.errors.setup(f"the key column(s) {', '.join(missing)} are not among the columns written"
                                    f" ({', '.join(self.columns)}): rows must carry their key")
        if p.mode != "error" and frozenset(self.key) not in unique:
            raise self.errors.setup(f"{where} has no unique index or primary key on ({', '.join(self.key)}), which"
                                    f" on_conflict={p.mode!r} needs to find conflicts: create one (CREATE UNIQUE INDEX"
                                    f" ... ON {self.table} ({', '.join(self.key)})) or set key= to one that exists")
        if p.mode != "upsert":
            return
        wrong = [c for c in p.update if c not in self.columns or c in self.key]
        if wrong:
            raise self.errors.setup(f"upsert columns {', '.join(wrong)} must be written columns outside the key"
                                    f" (written: {', '.join(self.columns)}; key: {', '.join(self.key)})")
        self.update = list(p.update) or [c for c in self.columns if c not in self.key]


def open_writer(db: Database, table: str, policy: ConflictPolicy, errors: ErrorKinds) -> TableWriter:
    """A writer for `table` of `db` (PostgreSQL needs the `jobkit[postgres]` extra)."""
    db.check_table(table, errors.setup)
    if db.kind == "sqlite":
        from .sqlite_writer import SQLiteWriter

        return SQLiteWriter(db, table, policy, errors)
    from .postgres_writer import PostgresWriter

    return PostgresWriter(db, table, policy, errors)
