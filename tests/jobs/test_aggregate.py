"""jobkit.jobs.aggregate on every source and engine: a real SQLite file, Parquet and CSV files (DuckDB, and the
SQLite fallback with DuckDB forced absent), and the real PostgreSQL; each result equal to a direct computation."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import AggregateReport
from jobkit.jobs.analytics import engines

from .aggregate_helpers import METRICS, UTC, close_to, direct, events, to_csv, to_parquet, to_postgres, to_sqlite
from .conftest import Db

PARIS = ZoneInfo("Europe/Paris")
START, END = dt.datetime(2024, 3, 26, tzinfo=PARIS), dt.datetime(2024, 4, 5, tzinfo=PARIS)
RANGE = {"time_column": "ts", "start": "2024-03-26T00:00:00", "end": "2024-04-05T00:00:00",
         "timezone": "Europe/Paris"}


async def aggregate(backend: Backend, **payload: Any) -> AggregateReport:
    handle = await jobkit.jobs.aggregate_flow({**RANGE, **payload}, backend=backend)
    report = await handle.result(timeout=60)
    assert isinstance(report, AggregateReport)
    return report


@pytest.fixture
def no_duckdb(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker as it is without jobkit[analytics]."""
    monkeypatch.setattr(engines, "duckdb_module", lambda: None)


@pytest.mark.parametrize("kind", ["sqlite", "parquet", "csv", "csv-fallback"])
async def test_days_by_country_equal_a_direct_computation(memory: Backend, tmp_path: Path, kind: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    evs = events()
    if kind == "sqlite":
        to_sqlite(evs, tmp_path / "events.db")
        source: dict[str, Any] = {"source": "sqlite:///events.db", "table": "events"}
    elif kind == "parquet":
        to_parquet(evs, tmp_path / "events.parquet")
        source = {"files": ["events.parquet"]}
    else:
        to_csv(evs[:2000], tmp_path / "a.csv")
        to_csv(evs[2000:], tmp_path / "b.csv")
        source = {"files": ["*.csv"]}
        if kind == "csv-fallback":
            monkeypatch.setattr(engines, "duckdb_module", lambda: None)
    report = await aggregate(memory, **source, partition="week", bucket="day", group_by=["country"], metrics=METRICS)
    rows, totals = direct(evs, START, END, "Europe/Paris")
    close_to(report.rows or [], rows)
    close_to(report.totals or [], totals)
    assert report.engine == {"parquet": "duckdb", "csv": "duckdb"}.get(kind, "sqlite")
    assert (report.partitions, report.completed, report.missing) == (2, 2, [])  # Tue 26 Mar to Mon 1 Apr, to 5 Apr
    assert report.columns == ["period", "country", "count", "sum_amount", "avg_amount", "min_amount", "max_amount",
                              "count_distinct_user_id", "p90_amount", "p50_amount"]


async def test_postgresql_table_equals_a_direct_computation(memory: Backend, pg: Db) -> None:
    evs = events()
    await to_postgres(evs, pg.conn)
    for partition, count in (("day", 10), ("week", 2)):  # one period per query, and days found by a CASE
        report = await aggregate(memory, source="pg", table="events", partition=partition, bucket="day",
                                 group_by=["country"], metrics=METRICS)
        rows, totals = direct(evs, START, END, "Europe/Paris")
        close_to(report.rows or [], rows)
        close_to(report.totals or [], totals)
        assert report.engine == "postgresql" and report.partitions == count


async def test_a_day_of_a_dst_change_is_23_or_25_hours(memory: Backend, tmp_path: Path) -> None:
    """Hours of local time: 31 March 2024 in Paris has 23, 27 October has 25 (01:00 twice, two offsets)."""
    hours = [dt.datetime(2024, 3, 30, 22, tzinfo=UTC) + dt.timedelta(minutes=30 * i) for i in range(2 * 24)]
    hours += [dt.datetime(2024, 10, 26, 22, tzinfo=UTC) + dt.timedelta(minutes=30 * i) for i in range(2 * 25)]
    evs = [(t, "DE", 1, 1.0) for t in hours]
    to_parquet(evs, tmp_path / "h.parquet")
    by_day = await aggregate(memory, files=["h.parquet"], start="2024-03-31", end="2024-04-01", metrics=["count"])
    assert [r["count"] for r in by_day.rows or []] == [46]  # 23 hours, two events each
    autumn = await aggregate(memory, files=["h.parquet"], start="2024-10-27", end="2024-10-28", bucket="hour",
                             metrics=["count"])
    periods = [r["period"] for r in autumn.rows or []]
    assert len(periods) == 25 and all(r["count"] == 2 for r in autumn.rows or [])
    assert periods[1:4] == ["2024-10-27T01:00:00+02:00", "2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"]
    rows, _ = direct(evs, dt.datetime(2024, 10, 27, tzinfo=PARIS), dt.datetime(2024, 10, 28, tzinfo=PARIS),
                     "Europe/Paris", "hour")
    assert [r["period"] for r in rows] == periods


async def test_filters_are_parameters_and_a_registered_query_is_a_source(memory: Backend, tmp_path: Path) -> None:
    evs = events()
    to_sqlite(evs, tmp_path / "events.db")
    hostile = "DE' OR '1'='1"
    report = await aggregate(memory, source="sqlite:///events.db", table="events", metrics=["count"],
                             where=[{"column": "country", "op": "in", "value": ["FR", hostile]}], totals=False)
    want = sum(1 for e in evs if e[1] == "FR" and START <= e[0] < END)
    assert sum(r["count"] for r in report.rows or []) == want and report.totals is None
    jobkit.jobs.register_query("big_orders", "sqlite:///events.db",
                               "SELECT * FROM events WHERE amount >= :least")
    report = await aggregate(memory, query="big_orders", params={"least": 50}, metrics=["count", "sum(amount)"],
                             partition="month", bucket="day")
    big = [e for e in evs if e[3] >= 50 and START <= e[0] < END]
    assert sum(r["count"] for r in report.rows or []) == len(big) and report.partitions == 2


async def test_rows_upserted_into_a_destination_once_per_period_and_group(memory: Backend, tmp_path: Path, db: Db
                                                                         ) -> None:
    evs = events()
    to_parquet(evs, tmp_path / "events.parquet")
    if db.path is not None:
        sqlite3.connect(db.path).close()
    dest = db
    payload = {"files": ["events.parquet"], "group_by": ["country"], "metrics": ["count", "avg(amount)"],
               "destination": dest.ref, "destination_table": "daily", "return_rows": False}
    first = await aggregate(memory, **payload)
    assert first.rows is None and first.rows_written == first.row_count == 40  # 10 days, 4 countries
    stored = await dest.rows("SELECT period, country, count, avg_amount FROM daily ORDER BY period, country")
    rows, _ = direct(evs, START, END, "Europe/Paris")
    assert [(p, c, n) for p, c, n, _ in stored] == [(r["period"], r["country"], r["count"]) for r in rows]
    await dest.execute("UPDATE daily SET count = -1")
    again = await aggregate(memory, **payload, totals=False)  # another payload: a new flow, the same rows
    assert again.rows_written == 40
    assert await dest.rows("SELECT count(*), min(count) FROM daily") == [(40, min(r["count"] for r in rows))]


@pytest.mark.parametrize("form", ["epoch_s", "epoch_ms", "iso_offset", "iso_t_z"])
async def test_sqlite_time_columns_in_every_form(memory: Backend, tmp_path: Path, form: str) -> None:
    """Epoch numbers, ISO text with offsets (converted row by row) and ISO 'T...Z' text all count alike."""
    evs = events(n=1500)
    tokyo = dt.timezone(dt.timedelta(hours=9))
    stored = {"epoch_s": lambda t: int(t.timestamp()), "epoch_ms": lambda t: int(t.timestamp() * 1000),
              "iso_offset": lambda t: t.astimezone(tokyo).isoformat(),
              "iso_t_z": lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")}[form]
    with sqlite3.connect(tmp_path / "events.db") as c:
        c.execute("CREATE TABLE events (ts, country TEXT, user_id INTEGER, amount REAL)")
        c.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", [(stored(t), a, b, d) for t, a, b, d in evs])
    report = await aggregate(memory, source="sqlite:///events.db", table="events", partition="week", bucket="day",
                             group_by=["country"], metrics=["count", "p90(amount)"],
                             epoch="ms" if form == "epoch_ms" else "s")
    rows, totals = direct(evs, START, END, "Europe/Paris")
    close_to(report.rows or [], rows)
    close_to(report.totals or [], totals)
