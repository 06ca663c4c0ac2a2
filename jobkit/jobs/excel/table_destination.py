"""`sqlite:///file.db?table=name` and `postgresql://name?table=name`: rows into a database table through the shared
table writers (jobs/db), with the import's `on_conflict`, `key` and `duplicates` applied.

The table is created from the row model when missing (its key, if given, as the primary key). A SQLite file
must lie inside the worker's file roots; a PostgreSQL database (or `sqlite://name`) must be one the worker
registered with `jobkit.jobs.register_database`: a payload never carries a DSN.

Each batch and the import's state commit in one transaction, so a resumed import neither loses nor repeats
rows, whatever moment the worker died at.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel

from ...urls import mask_url
from .._registry import shorten
from ..db import BatchCounts, ColumnSpec, ConflictPolicy, ErrorKinds, TableWriter, open_writer, resolve_database
from ..db.writer import TypeName, ValueRefused
from .destinations import Destination
from .errors import ImportSetupError, RowsRejected
from .rows import base_types

__all__ = ["TableDestination"]

ERRORS = ErrorKinds(ImportSetupError, RowsRejected)
_TYPES: dict[Any, TypeName] = {bool: "boolean", int: "integer", float: "float", decimal.Decimal: "decimal",
                               str: "text", dt.date: "date", dt.datetime: "datetime", dt.time: "time"}


def _column_type(annotation: Any) -> TypeName:
    kinds = base_types(annotation)
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind in _TYPES:
            return _TYPES[kind]
        if kind in (dict, list) or (isinstance(kind, type) and issubclass(kind, BaseModel)):
            return "json"
    return "text"


class TableDestination(Destination):
    """A table of a SQLite file in the roots, or of a database the worker registered."""

    def __init__(self, url: str) -> None:
        self.url = url
        base, _, query = url.partition("?")
        tables = parse_qs(query).get("table", [])
        if len(tables) != 1:
            raise ImportSetupError(f"name the table: write 'sqlite:///path/file.db?table=name' (sqlite:////abs/path.db"
                                   " for an absolute path) or 'postgresql://warehouse?table=name' (a database the"
                                   f" worker registered), not {shorten(mask_url(url))!r}")
        self.db = resolve_database(base, ImportSetupError)
        self.table = tables[0]
        self.policy = ConflictPolicy()
        self.writer: TableWriter | None = None
        self.fields: list[str] = []

    def use_conflicts(self, policy: ConflictPolicy) -> None:
        """Resolve key conflicts by `policy` (the payload's on_conflict, key and duplicates); before `open`."""
        self.policy = policy

    async def open(self, model: type[BaseModel], job_id: str) -> dict[str, Any] | None:
        self.fields = list(model.model_fields)
        self.writer = open_writer(self.db, self.table, self.policy, ERRORS)
        create = [ColumnSpec(n, _column_type(f.annotation)) for n, f in model.model_fields.items()]
        missing = [k for k in self.policy.key if k not in self.fields]
        if missing:
            raise ImportSetupError(f"key column(s) {', '.join(missing)} are not fields of {model.__name__}")
        return await self.writer.open(self.fields, job_id, create)

    def _rows(self, rows: Sequence[BaseModel]) -> list[tuple[Any, ...]]:
        assert self.writer is not None, "open() first"
        out = []
        for r in rows:
            data = r.model_dump(mode="json")
            try:
                out.append(self.writer.convert([data[f] for f in self.fields]))
            except ValueRefused as exc:
                raise RowsRejected(f"table {self.table!r} cannot take the value {shorten(repr(data[exc.column]))} of"
                                   f" field {exc.column!r} ({exc}); none of the batch's rows were written") from None
        return out

    async def write(self, rows: Sequence[BaseModel], state: dict[str, Any]) -> None:
        await self.write_counted(rows, lambda _: state)

    async def write_counted(self, rows: Sequence[BaseModel], state: Callable[[BatchCounts], dict[str, Any]]
                            ) -> BatchCounts:
        """Write one batch; `state(counts)` is the import's state once it is in, committed with it."""
        assert self.writer is not None, "open() first"
        return await self.writer.write(self._rows(rows), state)

    async def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            await writer.close()
