"""The aggregation's payload (`Aggregate`), its metrics, a partition's payload and result, and the report."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..exports.models import Filter
from .calendar import UNITS, Unit, aligned, cuts

__all__ = ["MAX_BUCKETS", "MAX_PARTITIONS", "Aggregate", "AggregateReport", "Metric", "Partition",
           "PartitionResult", "Span"]

MAX_PARTITIONS = 10_000  # children of one flow
MAX_BUCKETS = 100_000  # result periods of one aggregation
MetricFn = Literal["count", "sum", "avg", "min", "max", "count_distinct", "percentile"]
_CALL = re.compile(r"^\s*([a-z_]+[0-9.]*)\s*(?:\(\s*([A-Za-z_][A-Za-z0-9_]*|\*)?\s*(?:,\s*([0-9.]+)\s*)?\))?\s*$")
_ALIASES = {"distinct": "count_distinct", "mean": "avg", "median": "p50"}


class Metric(BaseModel):
    """One number per period and group: `count`, `sum`, `avg`, `min`, `max`, `count_distinct` or `percentile`
    (continuous, `q` in [0, 1]) of `column`. Written as text too: "count", "sum(amount)", "p95(latency_ms)",
    "count_distinct(user_id)", "percentile(amount, 0.9)"."""

    model_config = ConfigDict(extra="forbid")

    fn: MetricFn
    column: str | None = None
    q: float | None = Field(default=None, ge=0.0, le=1.0)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        m = _CALL.match(value)
        if m is None:
            raise ValueError(f"metric {value[:60]!r} is not like 'count', 'sum(amount)' or 'p95(latency_ms)'")
        fn, column, q = _ALIASES.get(m.group(1), m.group(1)), m.group(2), m.group(3)
        pm = re.fullmatch(r"p([0-9]{1,2}(?:\.[0-9]+)?)", fn)
        if pm:
            fn, q = "percentile", str(float(pm.group(1)) / 100)
        return {"fn": fn, "column": None if column == "*" else column, "q": q}

    @model_validator(mode="after")
    def _complete(self) -> Metric:
        if self.fn != "count" and self.column is None:
            raise ValueError(f"{self.fn} needs a column, e.g. {self.fn}(amount)")
        if (self.fn == "percentile") != (self.q is not None):
            raise ValueError("a percentile needs q (0.95 for the 95th); only a percentile takes q")
        return self

    @property
    def out(self) -> str:
        """The metric's column in the result: its name, else e.g. count, sum_amount, p95_latency_ms."""
        if self.name:
            return self.name
        if self.fn == "percentile":
            assert self.q is not None
            return f"p{self.q * 100:g}".replace(".", "_") + f"_{self.column}"
        return self.fn if self.column is None else f"{self.fn}_{self.column}"


@functools.lru_cache(maxsize=64)
def _within(start: dt.datetime, end: dt.datetime, unit: Unit, timezone: str, limit: int) -> None:
    """ValueError if [start, end) holds more than `limit` units (cached: every child validates its parent's range)."""
    cuts(start, end, unit, ZoneInfo(timezone), limit)


class Aggregate(BaseModel):
    """Aggregate a table, a registered query or Parquet/CSV files over [start, end), by period and group.

    The work is a flow: one child per `partition` of the range, the parent merges (docs/analytics.md)."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, description="a database the worker registered ('warehouse') or"
                               " 'sqlite:///file.db' inside the file roots; a registered query knows its own")
    table: str | None = Field(default=None, description="a table or view of the source")
    query: str | None = Field(default=None, description="a query the worker registered with register_query")
    params: dict[str, Any] = Field(default_factory=dict, description="the :name parameters of the query")
    files: list[str] | None = Field(default=None, min_length=1, description="Parquet or CSV files (globs allowed)"
                                    " inside the file roots")
    file_format: Literal["parquet", "csv"] | None = Field(default=None, description="default: from the extension")
    time_column: str = Field(description="the timestamp each row is counted at")
    epoch: Literal["s", "ms"] = Field(default="s", description="how a numeric time column counts: epoch seconds"
                                      " or milliseconds")
    start: dt.datetime = Field(description="the first instant counted; without an offset, local time in timezone")
    end: dt.datetime = Field(description="the first instant not counted")
    timezone: str = Field(default="UTC", description="the IANA zone days, weeks and months are cut in")
    partition: Unit = Field(default="day", description="the work of one child job")
    bucket: Unit | None = Field(default=None, description="the period of a result row; default: the partition."
                                " It must fit in the partition (day in month, not week in month)")
    group_by: list[str] = Field(default_factory=list, description="columns each period is split by")
    metrics: list[Metric] = Field(default_factory=lambda: [Metric(fn="count")], min_length=1)
    where: list[Filter] = Field(default_factory=list, description="conditions on columns, all of which hold")
    destination: str | None = Field(default=None, description="a database to upsert the rows into")
    destination_table: str | None = Field(default=None, description="the table there (created if missing), keyed"
                                          " by period and the group_by columns")
    return_rows: bool = Field(default=True, description="the rows in the report (else only counts)")
    totals: bool = Field(default=True, description="one row per group over the whole range, in the report")
    policy: Literal["fail_fast", "wait_all", "continue_partial"] = "continue_partial"
    max_failed: float = Field(default=0.05, ge=0.0, le=1.0, description="continue_partial: the share of partitions"
                              " that may fail and the parent still merges the rest")
    engine: Literal["auto", "duckdb", "sqlite"] = Field(default="auto", description="files: duckdb when installed"
                                                         " (jobkit[analytics]), else sqlite (CSV only)")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v[:60]!r}: use an IANA name like 'Europe/Paris' or 'UTC'") from None
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def period(self) -> Unit:
        return self.bucket or self.partition

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """start and end as aware instants (a naive one is local time in `timezone`)."""
        tz = self.tz
        return tuple(t if t.tzinfo else t.replace(tzinfo=tz) for t in (self.start, self.end))  # type: ignore[return-value]

    @model_validator(mode="after")
    def _consistent(self) -> Aggregate:
        given = [n for n in ("table", "query", "files") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of table, query or files (given: {', '.join(given) or 'none'})")
        if self.table is not None and self.source is None:
            raise ValueError("name the source database of the table: a name the worker registered, or"
                             " 'sqlite:///file.db'")
        if self.files is not None and self.source is not None:
            raise ValueError("files are read directly: give files or a source, not both")
        if self.params and self.query is None:
            raise ValueError("params belong to a registered query")
        if (self.destination is None) != (self.destination_table is None):
            raise ValueError("give both destination and destination_table, or neither")
        if self.destination is None and not self.return_rows:
            raise ValueError("with no destination and return_rows=false the result would go nowhere")
        names = [m.out for m in self.metrics]
        taken = {n for n in names if names.count(n) > 1} | (set(names) & {"period", *self.group_by})
        if taken:
            raise ValueError(f"metric names must be unique and differ from period and the group_by columns:"
                             f" {', '.join(sorted(taken))} (give a metric a name)")
        self._check_range()
        return self

    def _check_range(self) -> None:
        start, end = self.bounds()
        tz, period = self.tz, self.period
        if end.astimezone(dt.timezone.utc) <= start.astimezone(dt.timezone.utc):
            raise ValueError(f"the range is empty: end ({end.isoformat()}) must be after start ({start.isoformat()})")
        if UNITS.index(period) > UNITS.index(self.partition) or (period == "week" and self.partition == "month"):
            raise ValueError(f"a {period} does not fit in a {self.partition} partition: use a partition of whole"
                             f" {period}s (or the same unit)")
        for what, t in (("start", start), ("end", end)):
            if not aligned(t, period, tz):
                raise ValueError(f"{what} {t.isoformat()} is not the start of a {period} in {self.timezone}: periods"
                                 " are whole, so give a boundary (e.g. local midnight for days)")
        for unit, limit in ((self.partition, MAX_PARTITIONS), (period, MAX_BUCKETS)):
            _within(start, end, unit, self.timezone, limit)

    def partitions(self) -> list[tuple[dt.datetime, dt.datetime]]:
        """[start, end) of each partition, in order (local aware datetimes)."""
        start, end = self.bounds()
        edges = cuts(start, end, self.partition, self.tz, MAX_PARTITIONS)
        return list(itertools.pairwise(edges))


class Span(BaseModel):
    """A range of time, local in the aggregation's zone."""

    start: dt.datetime
    end: dt.datetime


class Partition(BaseModel):
    """A child's payload: the aggregation and the partition of its range this child computes."""

    model_config = ConfigDict(extra="forbid")

    aggregate: Aggregate
    start: dt.datetime
    end: dt.datetime


class PartitionResult(BaseModel):
    """A partition's rows (period, group values, metrics and the sums and counts an average merges from)."""

    engine: str
    start: dt.datetime
    end: dt.datetime
    columns: list[str]
    rows: list[list[Any]]
    duration_s: float = 0.0


class AggregateReport(BaseModel):
    """What the parent merged: the rows (and totals), which partitions are missing, what was written where."""

    engine: str
    partitions: int
    completed: int
    missing: list[Span] = Field(default_factory=list)
    columns: list[str]
    rows: list[dict[str, Any]] | None = None
    row_count: int = 0
    totals: list[dict[str, Any]] | None = None
    destination: str | None = None
    rows_written: int = 0
    duration_s: float = 0.0
