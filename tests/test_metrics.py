"""Metrics read back (jobkit.metrics): buckets, percentiles, the per-minute series and `since=`."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

import jobkit
from jobkit.backends._metrics import KEPT_MINUTES, bucket, bucket_value, field, parse
from jobkit.errors import ConfigError
from jobkit.metrics import since_time, summarize


def test_every_duration_is_within_nine_percent_of_its_buckets_value() -> None:
    for seconds in (0.0011, 0.0042, 0.3, 1.0, 7.7, 59.9, 3600.0, 86400.0 * 3):
        assert abs(bucket_value(bucket(seconds)) - seconds) / seconds < 0.0906
    assert bucket(0.0) == bucket(0.0009) == 0 and bucket(-1.0) == 0  # a clock step back counts as no time
    assert [bucket(s) for s in (0.001, 0.002, 0.004)] == [1, 5, 9]  # four buckets per doubling


def test_summary_fills_minutes_without_jobs_and_reads_percentiles() -> None:
    start = 1_000 * 60.0
    rows = [(1000, "a", "c2,1", 3), (1000, "a", "f2,1", 1), (1002, "b", "c2,1", 92), (1002, "b", "c2,41", 4),
            (999, "a", "c0,0", 50), (1003, "a", "c0,0", 7)]  # 999 and 1003: outside the span
    m = summarize("q", rows, start + 5, start + 2 * 60 + 1)
    assert m.start == start and m.completed == [3, 0, 96] and m.failed == [1, 0, 0]
    assert (m.completed_total, m.failed_total, m.success_rate) == (99, 1, 0.99)
    assert m.run.count == m.wait.count == 100
    assert (m.run.p50, m.run.p95, m.run.p99) == (bucket_value(1), bucket_value(1), bucket_value(41))
    assert m.wait.p50 == m.wait.p99 == bucket_value(2)
    assert summarize("q", rows, start, start + 60, task="b").completed == [0, 0]
    assert m.per_minute(2) == 48.0 and m.per_minute(100) == 100 / 3
    empty = summarize("q", [], start, start)
    assert empty.success_rate is None and empty.run.p50 is None and empty.completed == [0]
    assert m.model_dump()["success_rate"] == 0.99  # in the JSON too (jobkit status --json)


def test_a_field_names_the_end_and_both_buckets() -> None:
    assert field("c", 0.0005, 2.0) == f"c0,{bucket(2.0)}" and parse(field("f", 1.0, 0.01)) == ("f", 40, 14)


def test_since_takes_datetimes_timedeltas_and_epoch_seconds() -> None:
    now = time.time()
    assert since_time(None, now) == now - 3600
    assert since_time(timedelta(minutes=5), now) == now - 300
    assert since_time(datetime.fromtimestamp(now - 60, timezone.utc), now) == pytest.approx(now - 60)
    assert since_time(now - 10, now) == now - 10
    assert since_time(0, now) == (now // 60 - KEPT_MINUTES + 1) * 60  # no earlier than what is kept
    with pytest.raises(ConfigError, match="no time zone"):
        since_time(datetime.now(), now)  # a naive datetime
    for bad in ("1h", float("nan"), True):
        with pytest.raises(ConfigError, match="datetime, a timedelta"):
            since_time(bad, now)  # type: ignore[arg-type]


async def test_collect_metrics_gives_each_queue_then_each_task(memory: jobkit.Backend) -> None:
    @jobkit.task(name="m.one", queue="m-a")
    async def one(ctx: jobkit.Context) -> None: ...

    @jobkit.task(name="m.two", queue="m-a")
    async def two(ctx: jobkit.Context) -> None: ...

    handles = [await jobkit.submit(t, backend=memory) for t in (one, two, two)]
    for h in handles:
        await h.result(timeout=10)
    got = await jobkit.collect_metrics(backend=memory)
    assert [(m.queue, m.task, m.completed_total) for m in got] == [("m-a", None, 3), ("m-a", "m.one", 1),
                                                                    ("m-a", "m.two", 2)]
    [elsewhere] = await jobkit.collect_metrics(["elsewhere"], backend=memory)
    assert (elsewhere.queue, elsewhere.task, elsewhere.completed_total, elsewhere.tasks) == ("elsewhere", None, 0, [])
