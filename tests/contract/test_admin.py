"""Admin on every backend: counts, listing with filters and paging, clean, retry, retention, rate limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState, Outcome, Retention


@jobkit.task(name="a.noop")
async def noop(ctx: jobkit.Context, n: int) -> int:
    return n


@jobkit.task(name="a.keep3", keep_completed=Retention(age=3600, count=3))
async def keep3(ctx: jobkit.Context, n: int) -> int:
    return n


@jobkit.task(name="a.short", keep_completed=Retention(age=0), keep_failed=Retention(age=0))
async def short_lived(ctx: jobkit.Context, fail: bool) -> str:
    if fail:
        raise RuntimeError("gone soon")
    return "gone soon"


async def finish_one(backend: Backend, queue: str, state: JobState, now: float, **kw: Any) -> str:
    [job] = (await backend.claim(queue, "w", limit=1, lease=30, now=now)).jobs
    await backend.finish(queue, "w", [Outcome(job_id=job.id, state=state, **kw)], now)
    return job.id


async def test_counts_by_state(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk("t", [1, 2, 3, 4])
    await q.add("t", 5, delay=100)
    now = time.time()
    await finish_one(backend, qname, JobState.COMPLETED, now, result=1)
    await finish_one(backend, qname, JobState.FAILED, now, error="x")
    await backend.claim(qname, "w", limit=1, lease=30, now=now)
    c = await q.counts()
    assert (c.waiting, c.delayed, c.active, c.completed, c.failed, c.cancelled) == (1, 1, 1, 1, 1, 0)
    assert c.total == 5 and not c.paused
    assert qname in await backend.queues()


async def test_list_filters_and_pages(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    for i in range(12):
        await q.add("even" if i % 2 == 0 else "odd", i)
    newest = await q.jobs(limit=5)
    assert [j.data for j in newest] == [11, 10, 9, 8, 7]
    page2 = await q.jobs(offset=5, limit=5)
    assert [j.data for j in page2] == [6, 5, 4, 3, 2]
    assert [j.data for j in await q.jobs(name="odd", limit=3)] == [11, 9, 7]
    await backend.claim(qname, "w-a", limit=2, lease=30, now=time.time())
    active = await q.jobs(state="active")
    assert sorted(j.data for j in active) == [0, 1]
    assert [j.worker for j in await q.jobs(worker="w-a")] == ["w-a", "w-a"]
    assert len(await q.jobs(state=["waiting", "active"], limit=100)) == 12
    assert await q.jobs(state="failed") == []


async def test_clean_by_state_and_age(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk("t", list(range(4)))
    now = time.time()
    old = [await finish_one(backend, qname, JobState.COMPLETED, now - 7200, result=i) for i in range(2)]
    recent = await finish_one(backend, qname, JobState.COMPLETED, now, result=2)
    failed_old = await finish_one(backend, qname, JobState.FAILED, now - 7200, error="x")
    assert await q.clean("completed", older_than=3600) == 2
    assert [await q.get(i) for i in old] == [None, None], "a cleaned job's data must be gone"
    assert await q.get(recent) is not None and await q.get(failed_old) is not None
    assert await q.clean("failed", older_than=3600, limit=10) == 1
    with pytest.raises(jobkit.ConfigError, match="finished jobs only"):
        await q.clean("waiting")


async def test_clean_respects_limit_and_keep_last(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk("t", list(range(6)))
    now = time.time()
    ids = [await finish_one(backend, qname, JobState.COMPLETED, now - 100 + i, result=i) for i in range(6)]
    assert await q.clean("completed", older_than=0, limit=2) == 2
    assert (await q.counts()).completed == 4
    assert await backend.clean(qname, JobState.COMPLETED, keep_last=1) == 3
    assert [j.id for j in await q.jobs(state="completed")] == [ids[-1]], "keep_last keeps the newest"


async def test_finish_keeps_the_newest_completed_at_every_moment(backend: Backend, qname: str, watch: Any) -> None:
    """`finish(keep_completed=n)` (and `finish_and_claim`) remove the oldest completed jobs in the same step."""
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk("t", list(range(8)))
    now = time.time()
    async with watch(backend, qname) as w:
        ids = []
        for i in range(5):
            [job] = (await backend.claim(qname, "w", limit=1, lease=30, now=now + i)).jobs
            await backend.finish(qname, "w", [Outcome(job_id=job.id, state=JobState.COMPLETED, result=i)], now + i,
                                 keep_completed=3)
            ids.append(job.id)
            assert (await q.counts()).completed == min(i + 1, 3), "the bound holds after every finish"
        [failed] = (await backend.claim(qname, "w", limit=1, lease=30, now=now + 5)).jobs
        await backend.finish(qname, "w", [Outcome(job_id=failed.id, state=JobState.FAILED, error="x")], now + 5,
                             keep_completed=0)
        assert (await q.counts()).completed == 0 and (await q.counts()).failed == 1, "only completed jobs count"
        [a, b] = (await backend.claim(qname, "w", limit=2, lease=30, now=now + 6)).jobs
        outcomes = [Outcome(job_id=j.id, state=JobState.COMPLETED, result=j.data) for j in (a, b)]
        await backend.finish_and_claim(qname, "w", outcomes, limit=1, lease=30, now=now + 6, keep_completed=1)
        await w.until(lambda e: e.event == "removed", count=6)
    assert [j.id for j in await q.jobs(state="completed")] == [b.id]
    removed = [e.job_id for e in w.seen if e.event == "removed"]
    assert sorted(removed) == sorted([*ids, a.id]), "each removal is an event"
    assert [await q.get(i) for i in removed] == [None] * 6, "a removed job's data is gone"
    assert await backend.clean(qname, JobState.COMPLETED, keep_last=1) == 0


async def test_one_claim_finish_and_removal_of_thousands_keeps_every_index(backend: Backend, qname: str) -> None:
    """One claim, one finish and one retention pass over 2,500 jobs each (on Redis, more than one command of a
    script carries: the sorted-set writes and deletions go in chunks): states, counts, lists and data stay exact."""
    q = jobkit.Queue(qname, backend=backend)
    n = 2500
    await q.add_bulk("t", list(range(n)))
    now = time.time()
    claimed = (await backend.claim(qname, "w", limit=n, lease=30, now=now)).jobs
    assert sorted(j.data for j in claimed) == list(range(n))
    counts = await q.counts()
    assert (counts.waiting, counts.active) == (0, n)
    assert len(await backend.list(qname, states=[JobState.ACTIVE], limit=n + 1)) == n
    assert await backend.list(qname, states=[JobState.WAITING]) == []
    outcomes = [Outcome(job_id=j.id, state=JobState.COMPLETED, result=j.data) for j in claimed]
    await backend.finish(qname, "w", outcomes, now + 1, keep_completed=10)
    counts = await q.counts()
    assert (counts.active, counts.completed) == (0, 10)
    assert await backend.list(qname, states=[JobState.ACTIVE]) == []
    kept = await backend.list(qname, states=[JobState.COMPLETED], limit=n)
    assert sorted(j.result for j in kept) == list(range(n - 10, n)), "the newest 10 stay"
    assert [await q.get(j.id) for j in claimed[:3]] == [None] * 3, "a removed job's data is gone"
    assert await backend.clean(qname, JobState.COMPLETED, keep_last=0) == 10
    assert (await q.counts()).completed == 0


async def test_finish_keeps_the_newest_failed_at_every_moment(backend: Backend, qname: str, watch: Any) -> None:
    """`finish(keep_failed=n)` (and `finish_and_claim`) remove the oldest failed jobs in the same step, completed
    and cancelled ones untouched; a retried job leaves the count."""
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk("t", list(range(8)))
    now = time.time()
    async with watch(backend, qname) as w:
        ids = []
        for i in range(4):
            [job] = (await backend.claim(qname, "w", limit=1, lease=30, now=now + i)).jobs
            await backend.finish(qname, "w", [Outcome(job_id=job.id, state=JobState.FAILED, error=str(i))], now + i,
                                 keep_failed=2)
            ids.append(job.id)
            assert (await q.counts()).failed == min(i + 1, 2), "the bound holds after every finish"
        assert await q.retry(ids[3])
        [again, done] = (await backend.claim(qname, "w", limit=2, lease=30, now=now + 5)).jobs
        assert again.id == ids[3]
        await backend.finish(qname, "w", [Outcome(job_id=done.id, state=JobState.COMPLETED)], now + 5, keep_failed=2)
        assert (await q.counts()).failed == 1, "the retried job left the failed ones"
        outcomes = [Outcome(job_id=again.id, state=JobState.FAILED, error="again")]
        await backend.finish_and_claim(qname, "w", outcomes, limit=1, lease=30, now=now + 6, keep_failed=1)
        await w.until(lambda e: e.event == "removed", count=3)
    assert [j.id for j in await q.jobs(state="failed")] == [ids[3]]
    assert (await q.counts()).completed == 1
    removed = [e.job_id for e in w.seen if e.event == "removed"]
    assert sorted(removed) == sorted(ids[:3]), "the oldest failed go first, each an event"
    assert await backend.clean(qname, JobState.FAILED, keep_last=1) == 0


@jobkit.task(name="a.keep2failed", keep_failed=Retention(age=3600, count=2))
async def keep2failed(ctx: jobkit.Context, n: int) -> int:
    raise jobkit.Unrecoverable(f"no {n}")


async def test_a_tasks_keep_failed_count_is_applied_by_its_workers(backend: Backend, qname: str, watch: Any) -> None:
    q = jobkit.Queue(qname, backend=backend)
    async with watch(backend, qname) as w, jobkit.Worker([keep2failed], backend=backend, queues=[qname],
                                                          handle_signals=False, concurrency=1):
        await q.add_bulk(keep2failed, [1, 2, 3, 4, 5])
        await w.until(lambda e: e.event == "removed", count=3, timeout=15)
    assert sorted(j.data for j in await q.jobs(state="failed")) == [4, 5]
    assert (await q.counts()).failed == 2


async def test_retry_failed(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk("t", [1, 2, 3])
    now = time.time()
    for _ in range(2):
        await finish_one(backend, qname, JobState.FAILED, now, error="broken", traceback="tb")
    assert await q.retry_failed() == 2
    c = await q.counts()
    assert c.failed == 0 and c.waiting == 3
    again = (await backend.claim(qname, "w", limit=3, lease=30, now=time.time())).jobs
    assert {j.attempts for j in again} == {1}, "a retried job gets fresh attempts"
    assert all(j.error is None for j in again)


async def test_retention_defaults_recorded(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk(noop, [1, 2])
    async with jobkit.Worker([noop], backend=backend, queues=[qname], handle_signals=False):
        handles = [jobkit.JobHandle(j, backend) for j in await q.jobs()]
        done = [await h.wait(timeout=10) for h in handles]
    for j in done:
        assert j.finished_at is not None and j.expires_at == pytest.approx(j.finished_at + 24 * 3600, abs=5)
    failed = await q.add(noop, 3)
    now = time.time()
    [claimed] = (await backend.claim(qname, "w", limit=1, lease=30, now=now)).jobs
    from jobkit.attempt import failed as fail_outcome

    await backend.finish(qname, "w", [fail_outcome(claimed, RuntimeError("x"))], now)
    stored = await q.get(failed.id)
    assert stored is not None and stored.expires_at == pytest.approx(now + 7 * 24 * 3600, abs=5)


async def test_retention_applied_by_workers_without_clean(backend: Backend, qname: str, watch: Any) -> None:
    q = jobkit.Queue(qname, backend=backend)
    worker = jobkit.Worker([keep3, short_lived], backend=backend, queues=[qname], handle_signals=False,
                           maintenance_every=0.05)
    async with watch(backend, qname) as w, worker:
            gone = await q.add(short_lived, False)
            gone_failed = await q.add(short_lived, True)
            await w.until(lambda e: e.event == "removed", count=2, timeout=15)
            await q.add_bulk(keep3, [1, 2, 3, 4, 5])
            await w.until(lambda e: e.event == "removed", count=4, timeout=15)
    removed = {e.job_id for e in w.seen if e.event == "removed"}
    assert {gone.id, gone_failed.id} <= removed
    assert await q.get(gone.id) is None and await q.get(gone_failed.id) is None
    assert (await q.counts()).completed == 3


async def test_rate_limit_across_two_workers(backend: Backend, qname: str, watch: Any) -> None:
    q = jobkit.Queue(qname, backend=backend)
    rate = jobkit.RateLimit(4, per=1.0)
    await q.add_bulk(noop, list(range(10)))
    async with watch(backend, qname) as w:
        workers = [jobkit.Worker([noop], backend=backend, queues=[qname], rate_limit=rate, handle_signals=False)
                   for _ in range(2)]
        async with workers[0], workers[1]:
            await w.until(lambda e: e.event == "completed", count=10, timeout=15)
    starts = sorted(e.at for e in w.seen if e.event == "active")
    assert len(starts) == 10
    for i in range(len(starts) - 4):
        assert starts[i + 4] - starts[i] >= 0.9, "more than 4 jobs started within one 1 s window"


async def test_pause_stops_workers_resume_restarts(backend: Backend, qname: str, watch: Any) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.pause()
    async with watch(backend, qname) as w, jobkit.Worker([noop], backend=backend, queues=[qname],
                                                       handle_signals=False):
            j = await q.add(noop, 7)
            with pytest.raises(asyncio.TimeoutError):
                await w.until(lambda e: e.event == "active", timeout=0.5)
            assert (await q.get(j.id)).state is JobState.WAITING  # type: ignore[union-attr]
            await q.resume()
            await w.until(lambda e: e.event == "completed", timeout=10)
