"""Concurrency limits: a task's own (a worker runs at most n of its jobs at once, by claim caps) and a queue's
global one (at most n of its jobs active across every worker, counted atomically at claim)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import jobkit
from jobkit.backends import Backend
from jobkit.backends.base import CONCURRENCY_RECHECK
from jobkit.errors import ConfigError
from jobkit.models import Job, JobOptions, JobState, Outcome, new_job_id

WAIT = 20.0  # seconds any wait of these tests may take before it fails


def job(queue: str, name: str, data: Any = None, priority: int = 3) -> Job:
    return Job(id=new_job_id(), name=name, queue=queue, data=data, options=JobOptions(priority=priority))


async def test_claim_caps_take_at_most_that_many_of_a_name_and_leave_the_rest_in_order(
        backend: Backend, qname: str) -> None:
    await backend.add([job(qname, "a", f"a{i}") for i in range(5)] + [job(qname, "b", f"b{i}") for i in range(3)])
    await backend.add([job(qname, "c", "c-urgent", priority=1)])
    now = time.time()
    got = await backend.claim(qname, "w", limit=10, lease=30, now=now, caps={"a": 2, "c": 0})
    assert [j.data for j in got.jobs] == ["a0", "a1", "b0", "b1", "b2"]
    assert got.dry  # what is left is held back by the caps
    none = await backend.claim(qname, "w", limit=10, lease=30, now=now, caps={"a": 0, "c": 0})
    assert none.jobs == [] and none.dry
    only = await backend.claim(qname, "w", limit=10, lease=30, now=now, names={"a"}, caps={"a": 1})
    assert [j.data for j in only.jobs] == ["a2"]
    rest = await backend.claim(qname, "w", limit=10, lease=30, now=now, caps={"a": 5})
    assert [j.data for j in rest.jobs] == ["c-urgent", "a3", "a4"]
    counts = await backend.counts(qname)
    assert counts.active == 9 and counts.waiting == 0


async def test_finish_and_claim_honours_caps(backend: Backend, qname: str) -> None:
    await backend.add([job(qname, "a", f"a{i}") for i in range(4)] + [job(qname, "b", "b0")])
    now = time.time()
    [first] = (await backend.claim(qname, "w", limit=1, lease=30, now=now)).jobs
    done = [Outcome(job_id=first.id, state=JobState.COMPLETED, result=1)]
    got = await backend.finish_and_claim(qname, "w", done, limit=10, lease=30, now=now, caps={"a": 1})
    assert [j.data for j in got.jobs] == ["a1", "b0"]
    assert (await backend.get(qname, first.id)).state is JobState.COMPLETED  # type: ignore[union-attr]


async def test_global_concurrency_bounds_active_jobs_across_claims(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    assert await q.global_concurrency() is None
    await backend.add([job(qname, "t", i) for i in range(8)])
    await q.set_global_concurrency(3)
    assert await q.global_concurrency() == 3
    now = time.time()
    one = await backend.claim(qname, "w1", limit=5, lease=30, now=now)
    assert len(one.jobs) == 3
    held = await backend.claim(qname, "w2", limit=5, lease=30, now=now)
    assert held.jobs == [] and held.retry_in == CONCURRENCY_RECHECK
    await backend.finish(qname, "w1", [Outcome(job_id=one.jobs[0].id, state=JobState.COMPLETED)], now)
    two = await backend.claim(qname, "w2", limit=5, lease=30, now=now)
    assert len(two.jobs) == 1
    assert (await backend.counts(qname)).active == 3
    await q.set_global_concurrency(None)
    assert await q.global_concurrency() is None
    rest = await backend.claim(qname, "w2", limit=10, lease=30, now=now)
    assert len(rest.jobs) == 4


async def test_global_concurrency_counts_jobs_already_active(backend: Backend, qname: str) -> None:
    await backend.add([job(qname, "t", i) for i in range(4)])
    now = time.time()
    assert len((await backend.claim(qname, "w", limit=2, lease=30, now=now)).jobs) == 2
    await backend.set_global_concurrency(qname, 2)  # set while two run: none more until one ends
    assert (await backend.claim(qname, "w", limit=2, lease=30, now=now)).jobs == []
    await backend.set_global_concurrency(qname, 3)
    assert len((await backend.claim(qname, "w", limit=2, lease=30, now=now)).jobs) == 1


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
async def test_global_concurrency_refuses_what_is_not_a_count(backend: Backend, qname: str, bad: Any) -> None:
    with pytest.raises(ConfigError, match="at least 1, or None"):
        await jobkit.Queue(qname, backend=backend).set_global_concurrency(bad)
    assert await backend.global_concurrency(qname) is None


def test_task_concurrency_refuses_what_is_not_a_count() -> None:
    async def f(ctx: jobkit.Context) -> None: ...

    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="concurrency must be a whole number"):
            jobkit.task(name="c.badcap", concurrency=bad)(f)


class Tally:
    """Jobs running now and the most at once, per task name; `reached` is set when `target` ran at once."""

    def __init__(self, target: int) -> None:
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.target = target
        self.reached = asyncio.Event()

    def start(self, name: str) -> None:
        self.now[name] = self.now.get(name, 0) + 1
        self.most[name] = max(self.most.get(name, 0), self.now[name])
        if self.now[name] >= self.target:
            self.reached.set()

    def end(self, name: str) -> None:
        self.now[name] -= 1
        self.done[name] = self.done.get(name, 0) + 1


tally = Tally(2)
others_done = asyncio.Event()


@jobkit.task(name="c.capped", concurrency=2)
async def capped(ctx: jobkit.Context, i: int) -> int:
    tally.start("capped")
    try:
        # The first two wait until every job of the other task has run: they hold both of the task's slots
        # meanwhile, so the other task's jobs went ahead beside them, and a third never started.
        await asyncio.wait_for(others_done.wait(), WAIT)
        await asyncio.sleep(0.005)  # overlap with the next one, so that more than 2 at once would show
        return i
    finally:
        tally.end("capped")


@jobkit.task(name="c.uncapped")
async def uncapped(ctx: jobkit.Context, i: int) -> int:
    tally.start("uncapped")
    await asyncio.sleep(0.005)
    tally.end("uncapped")
    if tally.done["uncapped"] == 10:
        others_done.set()
    return i


async def test_task_concurrency_caps_its_jobs_in_one_worker_and_others_go_ahead(backend: Backend, qname: str) -> None:
    global tally, others_done
    tally, others_done = Tally(2), asyncio.Event()
    q = jobkit.Queue(qname, backend=backend)
    jobs = await q.add_bulk(capped, list(range(20)))
    await q.add_bulk(uncapped, list(range(10)))
    async with jobkit.Worker([capped, uncapped], backend=backend, queues=[qname], concurrency=10):
        results = [await jobkit.JobHandle(j, backend, capped).result(timeout=WAIT) for j in jobs]
    assert results == list(range(20))
    assert tally.done == {"capped": 20, "uncapped": 10}
    assert tally.most["capped"] == 2
    assert tally.most["uncapped"] > 2  # the worker's own concurrency applies to them
    assert (await q.counts()).completed == 30


shared = Tally(3)


@jobkit.task(name="c.global")
async def global_job(ctx: jobkit.Context, i: int) -> str:
    shared.start("global")
    try:
        await asyncio.wait_for(shared.reached.wait(), WAIT)  # hold the slots until three run at once
        await asyncio.sleep(0.005)
        return ctx.worker
    finally:
        shared.end("global")


async def test_global_concurrency_holds_across_two_workers(backend: Backend, qname: str) -> None:
    global shared
    shared = Tally(3)
    q = jobkit.Queue(qname, backend=backend)
    await q.set_global_concurrency(3)
    handles = [await q.add(global_job, i) for i in range(12)]
    async with jobkit.Worker([global_job], backend=backend, queues=[qname], concurrency=5) as w1, \
            jobkit.Worker([global_job], backend=backend, queues=[qname], concurrency=5) as w2:
        ran_on = [await jobkit.JobHandle(h, backend, global_job).result(timeout=WAIT) for h in handles]
    assert shared.most["global"] == 3
    assert set(ran_on) <= {w1.id, w2.id}
    assert (await q.counts()).completed == 12
