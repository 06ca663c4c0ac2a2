"""Databases a payload may name: ones the worker's code registered by name, and SQLite files inside the file roots.

A payload comes from whoever can enqueue, so it never carries an address or a password: `"warehouse"` (or
`"postgresql://warehouse"`) names a database registered with `register_database("warehouse", dsn)`, and
`"sqlite:///file.db"` names a file inside the worker's file roots. Anything that looks like a DSN is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from ... import ConfigError
from ...urls import mask_url
from .._paths import inside_roots
from .._registry import shorten

__all__ = ["Database", "DatabaseKind", "register_database", "registered_databases", "resolve_database"]

DatabaseKind = Literal["sqlite", "postgresql"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
_PG_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Database:
    """A database a job may open: its kind, where it is (a DSN or a file), and what the worker allows on it."""

    kind: DatabaseKind
    target: str  # the DSN (PostgreSQL) or the absolute file path (SQLite); never shown
    name: str  # how messages and reports name it: the registered name, or the SQLite URL
    tables: frozenset[str] | None = None  # tables a payload may name; None: any the connection can reach
    owner_column: str | None = None  # the column that says whose a row is, for exports run for an owner
    allow_sql: bool = False  # payloads may send raw read-only SQL to export (trusted enqueuers only)

    def check_table(self, table: str, error: type[Exception]) -> None:
        """Refuse a table the worker did not allow on this database."""
        if self.tables is not None and table not in self.tables:
            allowed = ", ".join(sorted(self.tables)) or "none"
            raise error(f"table {shorten(table)!r} is not one the worker allows on database {self.name!r} (allowed:"
                        f" {allowed}); register the database with tables=[...] that include it")


_registered: dict[str, Database] = {}


def register_database(
    name: str, url: str, *, tables: Sequence[str] | None = None, owner_column: str | None = None,
    allow_sql: bool = False,
) -> None:
    """Let payloads name the database at `url` as `name` (in the worker's code; the URL may hold a password).

    `url` is `postgresql://user:password@host/db` (needs `jobkit[postgres]`) or `sqlite:////abs/path.db`.
    `tables` limits the tables payloads may read or write there; `owner_column` names the column that
    exports run for an owner filter on; `allow_sql=True` lets payloads send raw read-only SQL to exports:
    only for queues where every enqueuer is trusted.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"a database name is a plain word like 'warehouse', not {name!r}")
    lower = url.lower() if isinstance(url, str) else ""
    if lower.startswith(_PG_SCHEMES):
        kind: DatabaseKind = "postgresql"
        target = url
    elif lower.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        kind, target = "sqlite", str(Path(unquote(url[len("sqlite:///"):].partition("?")[0])).expanduser().absolute())
    else:
        raise ConfigError(f"register_database({name!r}, ...) needs a postgresql://user:password@host/db or"
                          f" sqlite:////abs/path.db URL, not {mask_url(str(url))!r}")
    if owner_column is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", owner_column):
        raise ConfigError(f"owner_column {owner_column!r} must be a plain column name")
    _registered[name] = Database(kind, target, name, None if tables is None else frozenset(tables), owner_column,
                                 allow_sql)


def registered_databases() -> list[str]:
    return sorted(_registered)


def resolve_database(ref: str, error: type[Exception]) -> Database:
    """The database a payload's `ref` names, or `error` saying what a payload may name instead."""
    if not isinstance(ref, str) or not ref.strip():
        raise error("name a database: a name the worker registered (e.g. 'warehouse') or 'sqlite:///file.db'")
    ref = ref.strip()
    lower = ref.lower()
    if lower.startswith("sqlite:///"):
        path = unquote(ref[len("sqlite:///"):].partition("?")[0])
        if not path:
            raise error("write a SQLite database as 'sqlite:///file.db' (a file inside the worker's file roots)")
        return Database("sqlite", str(inside_roots(path, "the SQLite database", error)), f"sqlite:///{path}")
    for scheme, kind in (("postgresql://", "postgresql"), ("postgres://", "postgresql"), ("sqlite://", "sqlite")):
        if lower.startswith(scheme):
            return _named(ref[len(scheme):].partition("?")[0], ref, kind, error)
    if "://" in ref or ":" in ref or "@" in ref:
        raise error(f"{shorten(mask_url(ref))!r} is not a database a payload may name: a payload never carries an"
                    " address or credentials. Register the database in the worker (jobkit.jobs.register_database"
                    "('warehouse', dsn)) and name it 'warehouse', or name a file as 'sqlite:///file.db'")
    return _named(ref, ref, None, error)


def _named(name: str, ref: str, kind: str | None, error: type[Exception]) -> Database:
    if not _NAME.match(name):
        raise error(f"{shorten(mask_url(ref))!r} is not a database a payload may name: a payload never carries an"
                    " address or credentials, only the name of a database the worker registered (e.g."
                    " 'postgresql://warehouse' or 'warehouse'; jobkit.jobs.register_database in the worker's code)")
    found = _registered.get(name)
    if found is None:
        known = ", ".join(registered_databases()) or "none"
        raise error(f"database {name!r} is not registered (registered: {known}). A payload can only name databases"
                    " the worker's code registered with jobkit.jobs.register_database(name, url), or SQLite files"
                    " inside the file roots as 'sqlite:///file.db'")
    if kind is not None and found.kind != kind:
        raise error(f"database {name!r} is a {found.kind} database, not {kind}: name it {name!r}")
    return found
