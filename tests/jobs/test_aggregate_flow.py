"""The aggregation as a flow on the memory, SQLite and Redis backends: a child per partition with job ids from the
payload and its range, missing partitions reported under continue_partial and recomputed (only they) by the
same call again; and hostile payloads refused with a clear error, nothing written."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import AggregateReport
from jobkit.jobs.analytics import engines, partition

from .aggregate_helpers import close_to, direct, events, to_parquet, to_sqlite
from .test_aggregate import END, RANGE, START

DAY = {**RANGE, "files": ["events.parquet"], "group_by": ["country"],
       "metrics": ["count", "avg(amount)", "count_distinct(user_id)", "p90(amount)"]}


@pytest.fixture
async def flow_backend(backend: Backend) -> Any:
    """The contract suite's backends (memory, SQLite file, real Redis), served by a worker as in production."""
    tasks = [jobkit.jobs.aggregate, jobkit.jobs.aggregate_partition]
    async with jobkit.Worker(tasks, backend=backend, handle_signals=False, concurrency=4):
        yield backend


async def test_missing_partitions_reported_then_recomputed_alone(flow_backend: Backend, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    evs = events()
    to_parquet(evs, tmp_path / "events.parquet")
    broken = dt.datetime(2024, 3, 31, tzinfo=START.tzinfo)
    runs: Counter[str] = Counter()
    original = partition.compute_partition

    async def counted(ctx: jobkit.Context, payload: Any) -> Any:
        runs[payload.start.isoformat()] += 1
        if payload.start == broken and runs["broken"] == 0:
            raise jobkit.Unrecoverable("the disk went away")
        return await original(ctx, payload)

    monkeypatch.setattr(partition, "compute_partition", counted)
    monkeypatch.setattr("jobkit.jobs.analytics.task.compute_partition", counted)
    payload = {**DAY, "max_failed": 0.2}
    handle = await jobkit.jobs.aggregate_flow(payload, backend=flow_backend)
    assert handle.id.startswith("aggregate-") and len(handle.child_handles or []) == 10
    assert {h.id for h in handle.child_handles or []} == {f"{handle.id}-{d:%Y%m%dT%H%MZ}" for d in (
        dt.datetime.combine(START.date() + dt.timedelta(days=i), dt.time(0), tzinfo=START.tzinfo).astimezone(
            dt.timezone.utc) for i in range(10))}
    first = await handle.result(timeout=60)
    assert isinstance(first, AggregateReport)
    assert (first.partitions, first.completed) == (10, 9)
    assert [(s.start, s.end) for s in first.missing] == [(broken, broken + dt.timedelta(days=1))]
    rows, _ = direct(evs, START, END, "Europe/Paris")
    close_to(first.rows or [], [r for r in rows if not r["period"].startswith("2024-03-31")])
    # totals over the completed partitions only, distinct counts and percentiles re-read exactly
    _, totals = direct([e for e in evs if not broken <= e[0] < broken + dt.timedelta(days=1)], START, END,
                       "Europe/Paris")
    close_to(first.totals or [], totals)
    assert first.totals and set(first.totals[0]) == {"country", "count", "avg_amount", "count_distinct_user_id",
                                                     "p90_amount"}

    runs["broken"] = 1  # the disk is back
    before = dict(runs)
    again = await jobkit.jobs.aggregate_flow(payload, backend=flow_backend)
    assert again.id == handle.id
    second = await again.result(timeout=60)
    assert isinstance(second, AggregateReport) and (second.completed, second.missing) == (10, [])
    recomputed = {k: v - before.get(k, 0) for k, v in runs.items() if v != before.get(k, 0)}
    assert recomputed == {broken.isoformat(): 1}, "only the missing partition ran again"
    close_to(second.rows or [], rows)
    assert (await jobkit.jobs.aggregate_flow(payload, backend=flow_backend)).id == handle.id
    assert sum(runs.values()) - runs["broken"] == 11, "a completed flow is left alone"


async def test_a_child_saves_its_rows_as_its_checkpoint_and_reports_progress(memory: Backend, tmp_path: Path
                                                                             ) -> None:
    to_parquet(events(), tmp_path / "events.parquet")
    handle = await jobkit.jobs.aggregate_flow({**DAY, "end": "2024-03-27T00:00:00"}, backend=memory)
    report = await handle.result(timeout=60)
    assert isinstance(report, AggregateReport)
    [child] = [j for j in await jobkit.Queue("default", backend=memory).jobs(state="completed", limit=10)
               if j.name == "jobkit.jobs.aggregate_partition"]
    assert child.checkpoint == child.result
    assert child.progress is not None and child.progress.extra["rows"] == len(report.rows or []) == 4
    assert child.progress.message == "2024-03-26 00:00 to 2024-03-27 00:00: 4 rows"


def refused_payload(**changes: Any) -> dict[str, Any]:
    return {**DAY, **changes}


@pytest.mark.parametrize(("changes", "says"), [
    ({"end": "2024-03-26T00:00:00"}, "the range is empty"),
    ({"start": "2024-03-26T10:00:00"}, "is not the start of a day in Europe/Paris"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"partition": "day", "bucket": "week"}, "a week does not fit in a day partition"),
    ({"partition": "month", "bucket": "week"}, "a week does not fit in a month partition"),
    ({"start": "1990-01-01T00:00:00", "partition": "hour"}, "more than 10,000 hours"),
    ({"metrics": ["sum"]}, "sum needs a column"),
    ({"metrics": ["stddev(amount)"]}, "Input should be 'count', 'sum'"),
    ({"metrics": ["count", "count(*)"]}, "metric names must be unique"),
    ({"table": "events"}, "give exactly one of table, query or files"),
])
async def test_bad_payloads_are_refused_before_anything_is_queued(memory: Backend, changes: dict[str, Any],
                                                                 says: str) -> None:
    with pytest.raises(jobkit.PayloadError) as info:
        await jobkit.jobs.aggregate_flow(refused_payload(**changes), backend=memory)
    assert says in str(info.value)
    assert (await jobkit.Queue("default", backend=memory).counts()).total == 0


async def refused(backend: Backend, **payload: Any) -> str:
    handle = await jobkit.jobs.aggregate_flow({**DAY, "end": "2024-03-28T00:00:00", **payload}, backend=backend)
    with pytest.raises(jobkit.JobFailed) as info:
        await handle.result(timeout=60)
    kids = await handle.children()
    assert "completed" not in {c.state for c in kids}
    failed = await jobkit.Queue("default", backend=backend).get(next(c.id for c in kids if c.state == "failed"))
    assert failed is not None and failed.attempts == 1, "a setup error is not retried"
    return str(info.value) + "\n" + (failed.error or "")


@pytest.mark.parametrize(("payload", "says"), [
    ({"files": ["../outside.parquet"]}, "is outside the file roots"),
    ({"files": ["/etc/*"]}, "is outside the file roots"),
    ({"files": ["nothing.parquet"]}, "does not exist in the file roots"),
    ({"time_column": "when"}, "time_column 'when' is not a column of the source (its columns: ts, country"),
    ({"group_by": ["country; DROP TABLE x"]}, "group_by column 'country; DROP TABLE x' is not a column"),
    ({"metrics": ["sum(price)"]}, "metric column 'price' is not a column"),
    ({"where": [{"column": "nope", "value": 1}]}, "filter column 'nope' is not a column"),
    ({"files": None, "source": "postgresql://u:secret@db.example/x", "table": "events"}, "never carries an address"),
    ({"files": None, "source": "sqlite:///events.db", "table": "nope"}, "table 'nope' does not exist"),
])
async def test_hostile_payloads_fail_clearly_and_write_nothing(memory: Backend, tmp_path: Path,
                                                               payload: dict[str, Any], says: str) -> None:
    to_parquet(events(n=50), tmp_path / "events.parquet")
    to_sqlite(events(n=50), tmp_path / "events.db")
    sqlite3.connect(tmp_path / "out.db").close()
    message = await refused(memory, **payload, policy="fail_fast", destination="sqlite:///out.db",
                            destination_table="daily")
    assert says in message and "secret" not in message
    with sqlite3.connect(tmp_path / "out.db") as c:
        assert c.execute("SELECT name FROM sqlite_master").fetchall() == [], "nothing written"


async def test_parquet_without_duckdb_says_what_to_install(memory: Backend, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "duckdb_module", lambda: None)
    to_parquet(events(n=50), tmp_path / "events.parquet")
    assert "install jobkit[analytics]" in await refused(memory, policy="fail_fast")
    assert "engine 'duckdb' is not installed" in await refused(memory, policy="fail_fast", engine="duckdb")
    monkeypatch.undo()
    assert "engine 'sqlite' reads CSV files only" in await refused(memory, policy="fail_fast", engine="sqlite")


async def test_run_alone_the_parent_says_how_to_start_it(memory: Backend) -> None:
    with pytest.raises(jobkit.JobFailed) as info:
        await jobkit.run(jobkit.jobs.aggregate, DAY, backend=memory, timeout=30)
    assert "jobkit.jobs.aggregate_flow(payload)" in str(info.value.job.error)


async def test_a_retried_partition_returns_its_checkpoint_without_reading_again(memory: Backend, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    """An attempt that dies after saving its rows (here: its last progress call fails) is retried (after the
    built-in jobs' 5 s), and the retry returns the saved rows: the source is opened once."""
    to_parquet(events(), tmp_path / "events.parquet")
    opened: list[str] = []
    real_open = partition.open_engine

    def counting(p: Any) -> engines.Engine:
        opened.append(p.time_column)
        return real_open(p)

    real_progress = jobkit.Context.progress
    failed: list[int] = []

    async def dies_once(self: jobkit.Context, percent: float, message: str = "", **extra: Any) -> None:
        if percent == 100 and "rows" in extra and not failed:
            failed.append(self.attempt)
            raise ConnectionResetError("the worker's connection dropped")
        await real_progress(self, percent, message, **extra)

    monkeypatch.setattr(partition, "open_engine", counting)
    monkeypatch.setattr(jobkit.Context, "progress", dies_once)
    handle = await jobkit.jobs.aggregate_flow({**DAY, "end": "2024-03-27T00:00:00", "totals": False},
                                              backend=memory)
    report = await handle.result(timeout=30)
    assert isinstance(report, AggregateReport) and failed == [1] and opened == ["ts"]
    [child] = await handle.children()
    assert (await jobkit.Queue("default", backend=memory).get(child.id)).attempts == 2  # type: ignore[union-attr]
    rows, _ = direct(events(), START, START + dt.timedelta(days=1), "Europe/Paris")
    close_to(report.rows or [], rows)
