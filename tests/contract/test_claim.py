"""Claiming: priority then FIFO, delayed jobs when due, paused queues, task-name filters, rate limits, leases."""

from __future__ import annotations

import asyncio
import time

import jobkit
from jobkit.backends import Backend
from jobkit.models import Job, JobEvent, JobState, Outcome, RateLimit, new_job_id


def job(queue: str, name: str = "t", **kw: object) -> Job:
    return Job(id=new_job_id(), name=name, queue=queue, **kw)  # type: ignore[arg-type]


async def claim_all(backend: Backend, queue: str, worker: str = "w", now: float | None = None) -> list[Job]:
    out = []
    while True:
        got = await backend.claim(queue, worker, limit=3, lease=30, now=now or time.time())
        if not got.jobs:
            return out
        out.extend(got.jobs)


async def test_priority_then_fifo(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    order = [(3, "n1"), (4, "low"), (1, "crit"), (3, "n2"), (2, "high"), (1, "crit2"), (3, "n3")]
    for prio, label in order:
        await q.add("t", label, priority=prio)
    claimed = await claim_all(backend, qname)
    assert [j.data for j in claimed] == ["crit", "crit2", "high", "n1", "n2", "n3", "low"]


async def test_claim_sets_lease_owner_attempt(backend: Backend, qname: str) -> None:
    await backend.add([job(qname)])
    now = time.time()
    [c] = (await backend.claim(qname, "w1", limit=5, lease=12.5, now=now)).jobs
    assert c.state is JobState.ACTIVE and c.worker == "w1" and c.attempts == 1
    assert c.lease_until is not None and abs(c.lease_until - (now + 12.5)) < 0.01
    stored = await backend.get(qname, c.id)
    assert stored is not None and stored.state is JobState.ACTIVE and stored.worker == "w1"
    assert (await backend.claim(qname, "w2", limit=5, lease=10, now=now)).jobs == []


async def test_claim_respects_limit(backend: Backend, qname: str) -> None:
    await backend.add([job(qname) for _ in range(7)])
    got = await backend.claim(qname, "w", limit=5, lease=10, now=time.time())
    assert len(got.jobs) == 5
    assert (await backend.counts(qname)).active == 5


async def test_claim_says_when_the_queue_ran_dry(backend: Backend, qname: str) -> None:
    now = time.time()
    await backend.add([job(qname, created_at=now, run_at=now) for _ in range(3)])
    await backend.add([job(qname, created_at=now, run_at=now + 50)])
    full = await backend.claim(qname, "w", limit=2, lease=10, now=now)
    assert len(full.jobs) == 2 and not full.dry and full.retry_in is None
    last = await backend.claim(qname, "w", limit=5, lease=10, now=now)
    # Fewer ready than allowed: the worker may wait (until the delayed job is due) instead of asking again.
    assert len(last.jobs) == 1 and last.dry and last.retry_in is not None and 40 < last.retry_in <= 50
    named = await backend.claim(qname, "w", limit=5, lease=10, now=now + 60, names={"other"})
    assert named.jobs == [] and named.dry


async def test_delayed_job_runs_only_when_due(backend: Backend, qname: str) -> None:
    now = time.time()
    await backend.add([job(qname, run_at=now + 100, created_at=now)])
    early = await backend.claim(qname, "w", limit=1, lease=10, now=now)
    assert early.jobs == [] and early.retry_in is not None and 90 < early.retry_in <= 100
    [due] = (await backend.claim(qname, "w", limit=1, lease=10, now=now + 101)).jobs
    assert due.state is JobState.ACTIVE


async def test_paused_queue_keeps_jobs_waiting(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add("t", None)
    await q.pause()
    assert await q.is_paused()
    assert (await backend.claim(qname, "w", limit=1, lease=10, now=time.time())).jobs == []
    assert (await q.counts()).waiting == 1
    await q.resume()
    assert len((await backend.claim(qname, "w", limit=1, lease=10, now=time.time())).jobs) == 1


async def test_claim_by_task_names(backend: Backend, qname: str) -> None:
    await backend.add([job(qname, "a"), job(qname, "b"), job(qname, "a")])
    got = await backend.claim(qname, "w", limit=10, lease=10, now=time.time(), names={"b"})
    assert [j.name for j in got.jobs] == ["b"]
    rest = await backend.claim(qname, "w", limit=10, lease=10, now=time.time(), names={"a"})
    assert [j.name for j in rest.jobs] == ["a", "a"]


async def test_rate_limit_shared_by_workers(backend: Backend, qname: str) -> None:
    await backend.add([job(qname) for _ in range(10)])
    rate = RateLimit(3, per=10)
    now = time.time()
    first = await backend.claim(qname, "w1", limit=2, lease=30, now=now, rate_limit=rate)
    second = await backend.claim(qname, "w2", limit=5, lease=30, now=now + 1, rate_limit=rate)
    assert len(first.jobs) == 2 and len(second.jobs) == 1
    blocked = await backend.claim(qname, "w3", limit=5, lease=30, now=now + 2, rate_limit=rate)
    assert blocked.jobs == [] and blocked.retry_in is not None and 7 < blocked.retry_in <= 8.01
    later = await backend.claim(qname, "w3", limit=5, lease=30, now=now + 10.5, rate_limit=rate)
    assert len(later.jobs) == 3


async def test_renew_extends_only_held_leases(backend: Backend, qname: str) -> None:
    await backend.add([job(qname), job(qname)])
    now = time.time()
    a, b = (await backend.claim(qname, "w1", limit=2, lease=5, now=now)).jobs
    held = await backend.renew(qname, "w1", [a.id, b.id], 60, now + 1)
    assert held == {a.id: False, b.id: False}
    assert await backend.renew(qname, "intruder", [a.id], 60, now + 1) == {}
    # the renewed lease survives a recovery that would have caught the old one
    assert await backend.recover(qname, now + 10) == []
    stored = await backend.get(qname, a.id)
    assert stored is not None and stored.state is JobState.ACTIVE


async def test_expired_lease_recovered_with_stall_count(backend: Backend, qname: str) -> None:
    await backend.add([job(qname)])
    now = time.time()
    [c] = (await backend.claim(qname, "dead-worker", limit=1, lease=5, now=now)).jobs
    [moved] = await backend.recover(qname, now + 6)
    assert moved.id == c.id and moved.state is JobState.WAITING and moved.stalls == 1 and moved.worker is None
    assert "dead-worker" in moved.history[-1].note
    assert await backend.renew(qname, "dead-worker", [c.id], 5, now + 7) == {}
    assert not await backend.set_progress(qname, "dead-worker", c.id, jobkit.Progress(percent=5))
    [again] = (await backend.claim(qname, "w2", limit=1, lease=5, now=now + 7)).jobs
    assert again.id == c.id and again.attempts == 2
    # the dead worker's late outcome is ignored
    assert await backend.finish(qname, "dead-worker", [Outcome(job_id=c.id, state=JobState.COMPLETED)], now + 8) == []


async def test_stalling_past_max_stalls_fails(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    j = await q.add("t", None)
    now = time.time()
    for i in range(2):  # default max_stalls = 1: the second stall fails the job
        await backend.claim(qname, f"w{i}", limit=1, lease=1, now=now + i * 10)
        await backend.recover(qname, now + i * 10 + 2)
    failed = await q.get(j.id)
    assert failed is not None and failed.state is JobState.FAILED and failed.stalls == 2
    assert failed.error is not None and "stalled" in failed.error and "max_stalls=1" in failed.error


async def test_finish_and_claim_writes_outcomes_then_claims(backend: Backend, qname: str, watch: type) -> None:
    """The worker's combined step: the outcomes land (events, result), then the next jobs are claimed; a backend
    may do both in one round trip, but the finished jobs are never handed out again."""
    await backend.add([job(qname, data=i) for i in range(4)])
    now = time.time()
    first = (await backend.claim(qname, "w", limit=2, lease=30, now=now)).jobs
    async with watch(backend, qname) as events:
        outcomes = [Outcome(job_id=c.id, state=JobState.COMPLETED, result={"n": c.data}) for c in first]
        got = await backend.finish_and_claim(qname, "w", outcomes, limit=5, lease=30, now=now + 1)
        await events.until(lambda e: e.event == "completed", count=2)
        await events.until(lambda e: e.event == "active", count=2)
    assert sorted(j.data for j in got.jobs) == [2, 3] and all(j.state is JobState.ACTIVE for j in got.jobs)
    for c in first:
        done = await backend.get(qname, c.id)
        assert done is not None and done.state is JobState.COMPLETED and done.result == {"n": c.data}
    counts = await backend.counts(qname)
    assert (counts.completed, counts.active, counts.waiting) == (2, 2, 0)
    # An outcome for a job this worker no longer holds is refused, and the claim still happens.
    stale = [Outcome(job_id=first[0].id, state=JobState.FAILED, error="late")]
    again = await backend.finish_and_claim(qname, "w", stale, limit=5, lease=30, now=now + 2)
    assert again.jobs == []
    late = await backend.get(qname, first[0].id)
    assert late is not None and late.state is JobState.COMPLETED


async def test_watch_reads_the_job_and_sees_its_later_events(backend: Backend, qname: str) -> None:
    [added] = await backend.add([job(qname)])
    events, seen = await backend.watch(qname, added.id)
    try:
        assert seen is not None and seen.id == added.id and seen.state is JobState.WAITING
        [c] = (await backend.claim(qname, "w", limit=1, lease=30, now=time.time())).jobs
        await backend.finish(qname, "w", [Outcome(job_id=c.id, state=JobState.COMPLETED, result=7)], time.time())

        async def until_completed() -> None:
            async for ev in events:
                if ev.job_id == added.id and ev.event == "completed":
                    return

        await asyncio.wait_for(until_completed(), 10)
        other, missing = await backend.watch(qname, "no-such-job")
        await other.aclose()  # type: ignore[attr-defined]
        assert missing is None
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_watch_given_the_job_as_added_never_misses_its_end(backend: Backend, qname: str) -> None:
    """The job finishes before the watch starts. A backend may answer from `known` (the job as added) instead of
    reading it, but then it must replay the job's events since; either way the caller learns the job ended."""
    [added] = await backend.add([job(qname)])
    [c] = (await backend.claim(qname, "w", limit=1, lease=30, now=time.time())).jobs
    await backend.finish(qname, "w", [Outcome(job_id=c.id, state=JobState.COMPLETED, result=7)], time.time())
    events, seen = await backend.watch(qname, added.id, added)
    try:
        assert seen is not None and seen.id == added.id
        if not seen.finished:
            assert seen.state is JobState.WAITING  # `known` itself, not a read

            async def until_completed() -> JobEvent:
                async for ev in events:
                    if ev.job_id == added.id and ev.state.finished:
                        return ev
                raise AssertionError("the subscription ended before the job's end")

            assert (await asyncio.wait_for(until_completed(), 10)).state is JobState.COMPLETED
        else:
            assert seen.state is JobState.COMPLETED and seen.result == 7
    finally:
        await events.aclose()  # type: ignore[attr-defined]
