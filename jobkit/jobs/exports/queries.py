"""What an export reads, as SQL with parameters: a table with columns and filters, a query the worker registered,
or (only where the worker allows it) raw SQL. Values always travel as parameters, never inside the SQL.

Queries name their parameters `:name`; they are rewritten to the database's own style (`?` or `$n`), skipping
text in quotes, comments and `::` casts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ... import ConfigError
from .._registry import not_registered
from ..db.databases import Database
from ..db.writer import check_identifier, split_table
from .errors import ExportSetupError
from .models import Export, Filter

__all__ = ["Plan", "RegisteredQuery", "bind", "condition", "register_query", "registered_query"]

_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$([A-Za-z_]\w*)?\$.*?\$\1\$|::"""
                     r"""|:([A-Za-z_]\w*)""", re.S)
_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "like": "LIKE"}


@dataclass(frozen=True)
class RegisteredQuery:
    """A query the worker's code wrote: payloads name it and give its parameters."""

    name: str
    database: str
    sql: str
    owner_param: str | None = None  # the :parameter an export run for an owner binds to that owner


_queries: dict[str, RegisteredQuery] = {}


def register_query(name: str, database: str, sql: str, *, owner_param: str | None = None) -> None:
    """Let export payloads run `sql` on `database` (a registered name, or 'sqlite:///file.db') as `query=name`.

    Parameters are written `:name` and come from the payload's `params`; `owner_param` names the one an export
    run for an owner binds to that owner (and that a payload may then not set). Registering a name again
    replaces it.
    """
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$", name or ""):
        raise ConfigError(f"a query name is a plain word like 'active_users', not {name!r}")
    if owner_param is not None and owner_param not in _names(sql):
        raise ConfigError(f"query {name!r} has no :{owner_param} parameter for its owner_param")
    _queries[name] = RegisteredQuery(name, database, sql, owner_param)


def registered_query(name: str) -> RegisteredQuery:
    found = _queries.get(name)
    if found is None:
        raise not_registered("query", name, _queries, "jobkit.jobs.register_query(name, database, sql)",
                             ExportSetupError)
    return found


def _names(sql: str) -> list[str]:
    return [m.group(2) for m in _TOKENS.finditer(sql) if m.group(2)]


def bind(sql: str, params: dict[str, Any], placeholder: Callable[[int], str]) -> tuple[str, list[Any]]:
    """`sql` with each `:name` replaced by the database's placeholder, and the values in order."""
    wanted = _names(sql)
    missing = sorted(set(wanted) - set(params))
    unused = sorted(set(params) - set(wanted))
    if missing or unused:
        raise ExportSetupError("the query's parameters do not match: " + "; ".join(
            part for part in (f"missing {', '.join(missing)}" if missing else "",
                              f"not in the query: {', '.join(unused)}" if unused else "") if part))
    order: dict[str, int] = {}
    values: list[Any] = []

    def swap(m: re.Match[str]) -> str:
        name = m.group(2)
        if not name:
            return m.group(0)
        if placeholder(1) == "?":  # positional: one value per occurrence
            values.append(params[name])
            return "?"
        if name not in order:
            values.append(params[name])
            order[name] = len(values)
        return placeholder(order[name])

    return _TOKENS.sub(swap, sql), values


@dataclass
class Plan:
    """The SQL to run and its parameters, plus what the result says it came from."""

    sql: str
    params: list[Any]
    description: str
    name: str  # for the default file name


def table_sql(p: Export, db: Database, have: list[str], owner: str | None, quote: Callable[[str], str],
              placeholder: Callable[[int], str]) -> Plan:
    """SELECT the payload's columns of its table, filtered (and scoped to `owner`), ordered, limited."""
    assert p.table is not None
    schema, name = split_table(p.table, ExportSetupError)
    if schema and db.kind == "sqlite":
        raise ExportSetupError(f"SQLite table names have no schema part: {p.table!r}")
    known = set(have)

    def column(c: str, what: str) -> str:
        check_identifier(c, what, ExportSetupError)
        if c not in known:
            raise ExportSetupError(f"table {p.table!r} has no column {c!r} (its columns: {', '.join(have)})")
        return quote(c)

    cols = [column(c, "column") for c in p.columns] if p.columns else [quote(c) for c in have]
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return placeholder(len(params))

    conds = [condition(f, column(f.column, "filter column"), param) for f in p.where]
    if owner is not None:
        if not db.owner_column or db.owner_column not in known:
            raise ExportSetupError(f"table {p.table!r} cannot be exported for an owner: the worker registered no"
                                   f" owner column on {db.name!r} that this table has (register_database(...,"
                                   " owner_column='user_id'))")
        conds.append(f"{quote(db.owner_column)} = {param(owner)}")
    sql = f"SELECT {', '.join(cols)} FROM {quote(p.table)}"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    if p.order_by:
        sql += " ORDER BY " + ", ".join(column(o.lstrip("-"), "order_by column") + (" DESC" if o.startswith("-")
                                                                                    else "") for o in p.order_by)
    if p.limit is not None:
        sql += f" LIMIT {int(p.limit)}"
    return Plan(sql, params, f"table {p.table!r} of {db.name}", name)


def condition(f: Filter, col: str, param: Callable[[Any], str], error: type[Exception] = ExportSetupError) -> str:
    """The SQL of filter `f` on the quoted column `col`, its values as parameters (`param(value)` -> placeholder)."""
    if f.op in ("is null", "is not null"):
        return f"{col} {f.op.upper()}"
    if f.op in ("in", "not in"):
        if not isinstance(f.value, list) or not f.value:
            raise error(f"filter {f.column!r} {f.op}: give a non-empty list of values")
        listed = ", ".join(param(v) for v in f.value)
        return f"{col} {f.op.upper()} ({listed})"
    if f.value is None:
        raise error(f"filter {f.column!r} {f.op} null matches nothing: use op 'is null' or 'is not null'")
    return f"{col} {_OPS[f.op]} {param(f.value)}"


def query_sql(p: Export, query: RegisteredQuery, owner: str | None, placeholder: Callable[[int], str]) -> Plan:
    """The registered query with the payload's parameters, the owner bound to its owner parameter."""
    params = dict(p.params)
    if owner is not None:
        if query.owner_param is None:
            raise ExportSetupError(f"query {query.name!r} cannot be exported for an owner: the worker registered it"
                                   " without owner_param")
        if query.owner_param in params:
            raise ExportSetupError(f"parameter {query.owner_param!r} of query {query.name!r} is the owner's: a"
                                   " payload cannot set it")
        params[query.owner_param] = owner
    sql, values = bind(query.sql, params, placeholder)
    if p.limit is not None:
        sql = f"SELECT * FROM ({sql}\n) AS q LIMIT {int(p.limit)}"
    return Plan(sql, values, f"query {query.name!r}", query.name)


def raw_sql(p: Export, db: Database, owner: str | None, placeholder: Callable[[int], str]) -> Plan:
    """Raw SQL from the payload: only on a database the worker registered with allow_sql=True, never for an owner."""
    assert p.sql is not None
    if not db.allow_sql:
        raise ExportSetupError(f"raw SQL is not allowed on {db.name!r}: name a table, or a query the worker registered"
                               " (jobkit.jobs.register_query); a worker whose enqueuers are all trusted may register"
                               " the database with allow_sql=True")
    if owner is not None:
        raise ExportSetupError("raw SQL cannot be scoped to an owner: export a table, or a registered query with an"
                               " owner_param")
    sql, values = bind(p.sql.strip().rstrip(";"), p.params, placeholder)
    if p.limit is not None:
        sql = f"SELECT * FROM ({sql}\n) AS q LIMIT {int(p.limit)}"
    return Plan(sql, values, "SQL", "export")
