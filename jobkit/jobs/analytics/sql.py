"""The SQL of one partition (and of the totals' re-read): rows of [start, end) put into their periods and groups.

One statement per partition, in the engine's own dialect, every value a parameter. A row's period is found by a
balanced CASE over the period edges (log2(periods) comparisons on the time column itself, so a Parquet reader
or an index still prunes by the range), which cuts local days and months exactly across DST changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..exports.queries import condition
from .errors import AggregateSetupError
from .models import Aggregate, Metric

__all__ = ["Dialect", "Query", "TimeColumn", "hidden_columns", "partition_sql", "totals_sql"]

DialectName = Literal["duckdb", "sqlite", "postgresql"]
TimeParam = Literal["aware", "naive_utc", "epoch_s", "epoch_ms", "iso_space", "iso_t"]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Dialect:
    name: DialectName
    placeholder: Callable[[int], str]

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def percentile(self, col: str, q: float) -> str:
        if self.name == "duckdb":
            return f"quantile_cont({col}, {q!r})"
        if self.name == "postgresql":
            return f"percentile_cont({q!r}) WITHIN GROUP (ORDER BY {col})"
        return f"jobkit_percentile({col}, {q!r})"  # a Python aggregate the SQLite engine registers


@dataclass(frozen=True)
class TimeColumn:
    """How the time column compares: `expr` (the column, or a conversion of it) against parameters of a kind."""

    expr: str
    param_kind: TimeParam

    def param(self, t: dt.datetime) -> Any:
        utc = t.astimezone(dt.timezone.utc)
        if self.param_kind == "aware":
            return utc
        if self.param_kind == "naive_utc":
            return utc.replace(tzinfo=None)
        if self.param_kind in ("iso_space", "iso_t"):  # UTC text, compared as text (SQLite)
            return utc.strftime("%Y-%m-%d" + (" " if self.param_kind == "iso_space" else "T") + "%H:%M:%S")
        ms = (utc - _EPOCH) // dt.timedelta(milliseconds=1)
        return ms if self.param_kind == "epoch_ms" else ms / 1000


@dataclass
class Query:
    sql: str
    params: list[Any] = field(default_factory=list)


def hidden_columns(metrics: Sequence[Metric]) -> list[tuple[str, str, str]]:
    """(name, function, column) of the sums and counts an average is merged from across partitions."""
    out = []
    for m in metrics:
        if m.fn == "avg":
            assert m.column is not None
            out += [(f"__sum_{m.out}", "sum", m.column), (f"__n_{m.out}", "count", m.column)]
    return out


class _Builder:
    def __init__(self, p: Aggregate, dialect: Dialect, source: Query, time: TimeColumn, columns: Sequence[str]) -> None:
        self.p, self.d, self.time = p, dialect, time
        self.params: list[Any] = list(source.params)
        self.source = source.sql
        self.known = set(columns)
        self.listing = ", ".join(columns)

    def param(self, value: Any) -> str:
        self.params.append(value)
        return self.d.placeholder(len(self.params))

    def column(self, name: str, what: str) -> str:
        if name not in self.known:
            raise AggregateSetupError(f"{what} {name[:63]!r} is not a column of the source (its columns:"
                                      f" {self.listing})")
        return self.d.quote(name)

    def metric(self, m: Metric) -> str:
        col = "*" if m.column is None else self.column(m.column, "metric column")
        if m.fn == "count_distinct":
            return f"count(DISTINCT {col})"
        if m.fn == "percentile":
            assert m.q is not None
            return self.d.percentile(col, m.q)
        return f"{m.fn}({col})"

    def period(self, edges: Sequence[dt.datetime]) -> str:
        """The index of the period a row's time falls in, edges[i] <= t < edges[i + 1] (a balanced CASE)."""
        def tree(lo: int, hi: int) -> str:  # periods lo..hi-1
            if hi - lo == 1:
                return str(lo)
            mid = (lo + hi) // 2
            return f"CASE WHEN {self.time.expr} < {self.param(self.time.param(edges[mid]))} THEN {tree(lo, mid)}" \
                   f" ELSE {tree(mid, hi)} END"
        return tree(0, len(edges) - 1)

    def where(self, spans: Sequence[tuple[dt.datetime, dt.datetime]]) -> str:
        t = self.time.expr
        ranges = [f"({t} >= {self.param(self.time.param(a))} AND {t} < {self.param(self.time.param(b))})"
                  for a, b in spans]
        conds = [ranges[0] if len(ranges) == 1 else "(" + " OR ".join(ranges) + ")"]
        conds += [condition(f, self.column(f.column, "filter column"), self.param, AggregateSetupError)
                  for f in self.p.where]
        return " AND ".join(conds)

    def select(self, lead: list[str], metrics: Sequence[Metric], spans: Sequence[tuple[dt.datetime, dt.datetime]]
               ) -> Query:
        groups = [self.column(g, "group_by column") for g in self.p.group_by]
        parts = [*lead, *(f"{g} AS {self.d.quote('g' + str(i))}" for i, g in enumerate(groups))]
        parts += [f"{self.metric(m)} AS {self.d.quote(m.out)}" for m in metrics]
        parts += [f"{fn}({self.column(c, 'metric column')}) AS {self.d.quote(n)}"
                  for n, fn, c in hidden_columns(metrics)]
        sql = f"SELECT {', '.join(parts)} FROM {self.source} WHERE {self.where(spans)}"
        keys = len(lead) + len(groups)
        if keys:
            sql += " GROUP BY " + ", ".join(str(i) for i in range(1, keys + 1))
        return Query(sql, self.params)


def partition_sql(p: Aggregate, dialect: Dialect, source: Query, time: TimeColumn, columns: Sequence[str],
                  edges: Sequence[dt.datetime]) -> Query:
    """Rows of [edges[0], edges[-1]): period index, group values, metrics, then the hidden sums and counts."""
    b = _Builder(p, dialect, source, time, columns)
    return b.select([f"{b.period(edges)} AS {dialect.quote('__period')}"], p.metrics, [(edges[0], edges[-1])])


def totals_sql(p: Aggregate, metrics: Sequence[Metric], dialect: Dialect, source: Query, time: TimeColumn,
               columns: Sequence[str], spans: Sequence[tuple[dt.datetime, dt.datetime]]) -> Query:
    """`metrics` per group over `spans` (the completed partitions), read again from the source."""
    return _Builder(p, dialect, source, time, columns).select([], metrics, spans)
