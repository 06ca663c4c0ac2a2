"""Metrics recorded by the finish transition: completed and failed jobs per queue, task and minute (kept 14 days),
and wait and run time histograms read back as percentiles."""

from __future__ import annotations

import math
import time

import jobkit
from jobkit.backends import Backend
from jobkit.backends._metrics import KEPT_MINUTES
from jobkit.metrics import summarize
from jobkit.models import Job, JobState, Outcome, new_job_id

T0 = math.floor(time.time() / 60) * 60.0 - 3600  # the start of a minute an hour ago


def job(queue: str, name: str, created: float) -> Job:
    return Job(id=new_job_id(), name=name, queue=queue, created_at=created, run_at=created)


async def run_one(backend: Backend, queue: str, name: str, state: JobState, *, added: float, started: float,
                  ended: float) -> None:
    """One job of `name`, added at `added`, claimed at `started`, its attempt ended at `ended` in `state`."""
    [j] = await backend.add([job(queue, name, added)])
    claimed = await backend.claim(queue, "w", limit=1, lease=3600, now=started, names={name})
    assert [c.id for c in claimed.jobs] == [j.id]
    outcome = Outcome(job_id=j.id, state=state, error=None if state is JobState.COMPLETED else "boom",
                      run_at=ended + 100)
    await backend.finish(queue, "w", [outcome], ended)


async def test_completed_and_failed_are_counted_per_minute_and_task(backend: Backend, qname: str) -> None:
    for i in range(3):
        await run_one(backend, qname, "a", JobState.COMPLETED, added=T0, started=T0 + 1, ended=T0 + 2 + i)
    await run_one(backend, qname, "a", JobState.FAILED, added=T0, started=T0 + 1, ended=T0 + 3)
    await run_one(backend, qname, "b", JobState.COMPLETED, added=T0, started=T0 + 61, ended=T0 + 62)
    # Neither a retry nor a cancel is an end that counts.
    await run_one(backend, qname, "b", JobState.DELAYED, added=T0, started=T0 + 61, ended=T0 + 63)
    await run_one(backend, qname, "b", JobState.CANCELLED, added=T0, started=T0 + 61, ended=T0 + 64)

    rows = await backend.metrics(qname, T0)
    every = summarize(qname, rows, T0, T0 + 150)
    assert every.start == T0 and len(every.completed) == 3
    assert every.completed == [3, 1, 0] and every.failed == [1, 0, 0]
    assert every.success_rate == 0.8 and every.tasks == ["a", "b"]
    a = summarize(qname, rows, T0, T0 + 150, task="a")
    assert (a.completed_total, a.failed_total, a.success_rate) == (3, 1, 0.75)
    assert a.wait.count == a.run.count == 4
    b = summarize(qname, rows, T0, T0 + 150, task="b")
    assert (b.completed, b.failed, b.wait.count) == ([0, 1, 0], [0, 0, 0], 1)
    assert summarize(qname, await backend.metrics(qname, T0 + 60), T0 + 60, T0 + 150).completed_total == 1


async def test_wait_and_run_percentiles_within_nine_percent(backend: Backend, qname: str) -> None:
    for i in range(1, 101):  # waited 0.1 s .. 10 s, ran 0.01 s .. 1 s
        await run_one(backend, qname, "t", JobState.COMPLETED, added=T0, started=T0 + i * 0.1,
                      ended=T0 + i * 0.1 + i * 0.01)
    m = summarize(qname, await backend.metrics(qname, T0), T0, T0 + 60)
    assert m.run.count == m.wait.count == 100
    for got, want in ((m.run.p50, 0.50), (m.run.p95, 0.95), (m.run.p99, 0.99),
                      (m.wait.p50, 5.0), (m.wait.p95, 9.5), (m.wait.p99, 9.9)):
        assert got is not None and abs(got - want) / want < 0.0906, (got, want)  # 2^(1/8) - 1: half a bucket


async def test_metrics_older_than_fourteen_days_are_dropped(backend: Backend, qname: str) -> None:
    await run_one(backend, qname, "t", JobState.COMPLETED, added=T0, started=T0, ended=T0 + 1)
    later = T0 + KEPT_MINUTES * 60
    await run_one(backend, qname, "t", JobState.FAILED, added=later, started=later, ended=later + 1)
    rows = await backend.metrics(qname, 0)
    assert {minute for minute, *_ in rows} == {int(later // 60)}
    assert [(field[0], n) for _, _, field, n in rows] == [("f", 1)]


async def test_a_job_failed_by_its_stalls_counts_as_failed(backend: Backend, qname: str) -> None:
    stalls_once = Job(id=new_job_id(), name="s", queue=qname, created_at=T0, run_at=T0,
                      options=jobkit.JobOptions(max_stalls=0))
    await backend.add([stalls_once, job(qname, "s", T0)])
    claimed = await backend.claim(qname, "w", limit=2, lease=10, now=T0 + 1)
    assert len(claimed.jobs) == 2
    moved = await backend.recover(qname, T0 + 30)  # both leases ended: one fails (max_stalls 0), one runs again
    assert sorted(j.state.value for j in moved) == ["failed", "waiting"]
    m = summarize(qname, await backend.metrics(qname, T0), T0, T0 + 60)
    assert (m.completed_total, m.failed_total, m.run.count) == (0, 1, 1)
    assert m.run.p50 is not None and abs(m.run.p50 - 29) / 29 < 0.0906  # from its start to the recovery


@jobkit.task(name="c.metered")
async def metered(ctx: jobkit.Context, fail: bool) -> None:
    if fail:
        raise ValueError("asked to fail")


async def test_a_worker_records_its_jobs_metrics(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    jobs = await q.add_bulk(metered, [i % 5 == 0 for i in range(20)])
    async with jobkit.Worker([metered], backend=backend, queues=[qname], concurrency=4):
        for j in jobs:
            await jobkit.JobHandle(j, backend, metered).wait(timeout=20)
    m = await q.metrics(task=metered)
    assert (m.completed_total, m.failed_total, m.success_rate) == (16, 4, 0.8)
    assert m.run.count == 20 and m.run.p99 is not None and m.run.p99 < 5
    assert (await q.metrics(task="other")).completed_total == 0
