"""Jobs claimed ahead of free slots (`Worker(prefetch=)`), on every backend: they start as slots free, run within
the grace at stop or go back with their attempt given back, honour a cancel, a lost lease and their task's cap, and
are claimed only while jobs are short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState, Outcome

starts: dict[str, list[int]] = {}  # queue -> indexes of the held jobs, in the order they started
gates: dict[str, list[asyncio.Event]] = {}  # queue -> a gate per held job: it ends once its gate opens
started: dict[str, asyncio.Event] = {}  # queue -> set as each held job starts


@jobkit.task(name="p.quick")
async def quick(ctx: jobkit.Context, seconds: float) -> None:
    await asyncio.sleep(seconds)


@jobkit.task(name="p.held", attempts=3)
async def held(ctx: jobkit.Context, p: dict[str, Any]) -> int:
    queue, i = p["q"], p["i"]
    starts[queue].append(i)
    started[queue].set()
    await asyncio.wait_for(gates[queue][i].wait(), 20)
    return i


@jobkit.task(name="p.capped", concurrency=1)
async def capped(ctx: jobkit.Context, p: dict[str, Any]) -> int:
    return int(await held.fn(ctx, p))


async def until(check: Any, what: str, timeout: float = 10.0) -> None:
    """Poll an async condition of the backend's state (no event says it) until true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def finished(q: jobkit.Queue, task: jobkit.Task[Any], payload: Any) -> None:
    job = await q.add(task, payload)
    await jobkit.JobHandle(job, await q.backend(), task).result(timeout=10)


@pytest.fixture
async def q(backend: Backend, qname: str) -> AsyncIterator[jobkit.Queue]:
    starts[qname], gates[qname], started[qname] = [], [asyncio.Event() for _ in range(3)], asyncio.Event()
    yield jobkit.Queue(qname, backend=backend)
    for gate in gates[qname]:
        gate.set()


def worker(backend: Backend, qname: str, **kw: Any) -> jobkit.Worker:
    options: dict[str, Any] = {"concurrency": 1, "prefetch": 2, "renew_every": 0.05, "grace": 10.0} | kw
    return jobkit.Worker([quick, held], backend=backend, queues=[qname], handle_signals=False, **options)


async def claimed_ahead(w: jobkit.Worker, q: jobkit.Queue, qname: str) -> list[jobkit.Job]:
    """Warm the worker up with a short job, add three held jobs, and wait until one runs and two are claimed."""
    await finished(q, quick, 0.0)
    jobs = [await q.add(held, {"q": qname, "i": i}) for i in range(3)]

    async def three_active() -> bool:
        return (await q.counts()).active == 3

    await until(three_active, "one job running and two claimed ahead")
    assert starts[qname] == [0] and w.active == 1
    return jobs


async def test_jobs_claimed_ahead_start_as_slots_free(backend: Backend, q: jobkit.Queue, qname: str) -> None:
    async with worker(backend, qname) as w:
        jobs = await claimed_ahead(w, q, qname)
        started[qname].clear()
        gates[qname][0].set()
        await asyncio.wait_for(started[qname].wait(), 10)
        assert starts[qname] == [0, 1]  # the next one, already claimed: no claim in between
        for gate in gates[qname]:
            gate.set()
        results = [await jobkit.JobHandle(j, backend, held).result(timeout=10) for j in jobs]
    assert results == [0, 1, 2] and starts[qname] == [0, 1, 2]
    assert [(await q.get(j.id)).attempts for j in jobs] == [1, 1, 1]  # type: ignore[union-attr]


async def test_stop_runs_jobs_claimed_ahead_within_the_grace(backend: Backend, q: jobkit.Queue, qname: str) -> None:
    w = worker(backend, qname)
    async with w:
        jobs = await claimed_ahead(w, q, qname)
        w.stop()
        for gate in gates[qname]:
            gate.set()
    assert starts[qname] == [0, 1, 2]
    assert [(await q.get(j.id)).state for j in jobs] == [JobState.COMPLETED] * 3  # type: ignore[union-attr]


async def test_past_the_grace_jobs_claimed_ahead_go_back_with_their_attempt(
    backend: Backend, q: jobkit.Queue, qname: str,
) -> None:
    async with worker(backend, qname, grace=0.1) as w:
        jobs = await claimed_ahead(w, q, qname)
    running, *ahead = [await q.get(j.id) for j in jobs]
    assert running is not None and running.state is JobState.WAITING and running.attempts == 1
    assert running.error == "handed back: worker stopped"
    for job in ahead:
        assert job is not None and job.state is JobState.WAITING and job.attempts == 0 and job.error is None
    assert starts[qname] == [0]


async def test_a_job_claimed_ahead_honours_a_cancel_without_starting(
    backend: Backend, q: jobkit.Queue, qname: str,
) -> None:
    async with worker(backend, qname) as w:
        jobs = await claimed_ahead(w, q, qname)
        await q.cancel(jobs[2].id)
        with pytest.raises(jobkit.JobCancelled):
            await jobkit.JobHandle(jobs[2], backend, held).result(timeout=10)
        cancelled = await q.get(jobs[2].id)
        assert cancelled is not None and cancelled.error == "cancelled before it started"
        for gate in gates[qname]:
            gate.set()
        assert await jobkit.JobHandle(jobs[1], backend, held).result(timeout=10) == 1
    assert starts[qname] == [0, 1]


async def test_jobs_claimed_ahead_whose_lease_ran_out_run_once(
    backend: Backend, q: jobkit.Queue, qname: str,
) -> None:
    """Every lease expires at once (as if the worker had hung): the held jobs go back to waiting. The worker's next
    renewal abandons the running one and drops those claimed ahead; it claims all three again, and the two that
    had not started run once (the running one twice: its first attempt was abandoned)."""
    async with worker(backend, qname) as w:
        jobs = await claimed_ahead(w, q, qname)
        started[qname].clear()
        assert len(await backend.recover(qname, time.time() + 3600)) == 3
        await asyncio.wait_for(started[qname].wait(), 10)  # the running one again, after that renewal
        for gate in gates[qname]:
            gate.set()
        results = [await jobkit.JobHandle(j, backend, held).result(timeout=10) for j in jobs]
    assert results == [0, 1, 2]
    assert sorted(starts[qname]) == [0, 0, 1, 2]


async def test_no_claim_ahead_after_long_jobs(backend: Backend, q: jobkit.Queue, qname: str) -> None:
    """After a job of 0.1 s (a longer running mean than PREFETCH_BELOW) a claim brings free slots' worth only: a job
    held behind a long one would wait while another worker could run it."""
    async with jobkit.Worker([quick, held], backend=backend, queues=[qname], concurrency=1, prefetch=2,
                             handle_signals=False) as w:
        await finished(q, quick, 0.1)
        jobs = [await q.add(held, {"q": qname, "i": i}) for i in range(3)]
        await asyncio.wait_for(started[qname].wait(), 10)
        assert w._room_left() == 0  # with its one slot taken, this worker asks for nothing more
        assert (await q.counts()).active == 1
        for gate in gates[qname]:
            gate.set()
        assert [await jobkit.JobHandle(j, backend, held).result(timeout=10) for j in jobs] == [0, 1, 2]


async def test_jobs_claimed_ahead_count_against_their_tasks_cap(
    backend: Backend, q: jobkit.Queue, qname: str,
) -> None:
    """A capped task (concurrency=1) with one job claimed ahead has no room for another: its second job stays
    waiting while an uncapped job is claimed ahead beside it, and is claimed once the first has ended."""
    gates[qname] += [asyncio.Event() for _ in range(2)]
    async with jobkit.Worker([quick, held, capped], backend=backend, queues=[qname], concurrency=1, prefetch=2,
                             renew_every=0.05, handle_signals=False):
        await finished(q, quick, 0.0)
        first = await q.add(held, {"q": qname, "i": 0})
        await asyncio.wait_for(started[qname].wait(), 10)
        later = [await q.add(capped, {"q": qname, "i": 3}), await q.add(capped, {"q": qname, "i": 4}),
                 await q.add(held, {"q": qname, "i": 1})]

        async def three_active() -> bool:
            return (await q.counts()).active == 3

        await until(three_active, "the first job running, one capped job and one other claimed ahead")
        assert [(await q.get(j.id)).state for j in later] == [  # type: ignore[union-attr]
            JobState.ACTIVE, JobState.WAITING, JobState.ACTIVE]
        for gate in gates[qname]:
            gate.set()
        for job in [first, *later]:
            await jobkit.JobHandle(job, backend).wait(timeout=10)
    assert starts[qname] == [0, 3, 1, 4] or starts[qname] == [0, 3, 4, 1]
    assert [(await q.get(j.id)).state for j in [first, *later]] == [JobState.COMPLETED] * 4  # type: ignore[union-attr]


async def test_default_prefetch_follows_the_backend(backend: Backend, qname: str) -> None:
    """Ahead of the slots where two claims overlap (Redis) and concurrency leaves no room for a second claim:
    up to twice a claim's jobs in all; none where claims go one at a time; a given one is kept."""
    for concurrency, on_redis in ((1, 1), (10, 10), (20, 4), (50, 0)):
        async with jobkit.Worker([quick], backend=backend, queues=[qname], concurrency=concurrency,
                                 handle_signals=False) as w:
            assert w.prefetch == (on_redis if backend.claims_overlap else 0)
    async with jobkit.Worker([quick], backend=backend, queues=[qname], prefetch=3, handle_signals=False) as w:
        assert w.prefetch == 3
    with pytest.raises(jobkit.ConfigError, match="prefetch must be zero or more"):
        jobkit.Worker([quick], prefetch=-1)


async def test_an_unstarted_job_goes_back_with_its_attempt(backend: Backend, q: jobkit.Queue, qname: str) -> None:
    """The backends' side: an outcome with started=False is a return, not a retry: the claim's attempt is given
    back, the job waits again and the next claim counts attempt 1."""
    job = await q.add(quick, 0.0)
    [claimed] = (await backend.claim(qname, "w1", limit=1, lease=30, now=time.time())).jobs
    assert claimed.attempts == 1
    await backend.finish(qname, "w1", [Outcome(job_id=job.id, state=JobState.WAITING, run_at=time.time(),
                                               started=False)], time.time())
    back = await q.get(job.id)
    assert back is not None and back.state is JobState.WAITING and back.attempts == 0
    [again] = (await backend.claim(qname, "w2", limit=1, lease=30, now=time.time())).jobs
    assert again.id == job.id and again.attempts == 1


@pytest.mark.parametrize("state", [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED])
def test_only_a_retry_state_can_hand_a_job_back_unstarted(state: JobState) -> None:
    with pytest.raises(ValidationError, match="started=False hands a job back"):
        Outcome(job_id="j", state=state, started=False)
