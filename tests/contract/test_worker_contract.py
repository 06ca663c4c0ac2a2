"""What a worker does with a job on every backend: results, retries, timeouts, progress, checkpoints, cancel."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState

calls: dict[str, int] = {}


@jobkit.task(name="c.add", attempts=1)
async def add(ctx: jobkit.Context, p: dict[str, int]) -> int:
    return p["a"] + p["b"]


@jobkit.task(name="c.flaky", attempts=3, backoff=jobkit.Backoff.fixed(0.2))
async def flaky(ctx: jobkit.Context, key: str) -> str:
    calls[key] = calls.get(key, 0) + 1
    if ctx.attempt < 3:
        raise RuntimeError(f"boom {ctx.attempt}")
    return f"ok after {ctx.attempt}"


@jobkit.task(name="c.always_fails", attempts=2, backoff=jobkit.Backoff.exponential(0.1, factor=3))
async def always_fails(ctx: jobkit.Context) -> None:
    raise ValueError("nope")


@jobkit.task(name="c.unrecoverable", attempts=5)
async def unrecoverable(ctx: jobkit.Context) -> None:
    raise jobkit.Unrecoverable("bad input, do not retry")


@jobkit.task(name="c.slow", attempts=2, timeout=0.2)
async def slow(ctx: jobkit.Context) -> None:
    await asyncio.sleep(30)


@jobkit.task(name="c.progress")
async def reports(ctx: jobkit.Context) -> str:
    for i in range(1, 5):
        await ctx.progress(i * 25, f"step {i}", step=i, of=4)
    return "done"


@jobkit.task(name="c.resumable", attempts=2)
async def resumable(ctx: jobkit.Context, n: int) -> list[int]:
    done: list[int] = list(ctx.checkpoint or [])
    for i in range(len(done), n):
        done.append(i)
        await ctx.save_checkpoint(done)
        if i == 2 and ctx.attempt == 1:
            raise RuntimeError("crash midway")
    return done


@jobkit.task(name="c.cooperative")
async def cooperative(ctx: jobkit.Context) -> str:
    await ctx.progress(1, "started")
    await asyncio.wait_for(ctx.wait_cancelled(), 30)
    return "stopped early"


@jobkit.task(name="c.stubborn")
async def stubborn(ctx: jobkit.Context) -> None:
    await ctx.progress(1, "started")
    await asyncio.sleep(60)


@jobkit.task(name="c.bad_result")
async def bad_result(ctx: jobkit.Context) -> Any:
    return {"handle": object()}


@jobkit.task(name="c.nan_result")
async def nan_result(ctx: jobkit.Context) -> float:
    return float("nan")


ALL = [add, flaky, always_fails, unrecoverable, slow, reports, resumable, cooperative, stubborn, bad_result, nan_result]


@pytest.fixture
async def worker(backend: Backend, qname: str) -> AsyncIterator[jobkit.Worker]:
    w = jobkit.Worker(ALL, backend=backend, queues=[qname], concurrency=4, lease=5, renew_every=0.05,
                      cancel_grace=0.3, grace=2, handle_signals=False)
    async with w:
        yield w


async def test_result(worker: jobkit.Worker, submit: Callable[..., Any]) -> None:
    h = await submit(add, {"a": 2, "b": 3})
    assert await h.result(timeout=10) == 5
    job = await h.job()
    assert job.state is JobState.COMPLETED and job.attempts == 1 and job.finished_at is not None
    assert [e.state for e in job.history] == [JobState.WAITING, JobState.ACTIVE, JobState.COMPLETED]


async def test_retries_with_fixed_backoff(worker: jobkit.Worker, submit: Callable[..., Any], qname: str) -> None:
    h = await submit(flaky, qname)
    assert await h.result(timeout=10) == "ok after 3"
    job = await h.job()
    assert job.attempts == 3 and calls[qname] == 3
    starts = [e.at for e in job.history if e.state is JobState.ACTIVE]
    assert len(starts) == 3
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(starts)), "retries must wait for the backoff"
    # DELAYED, or WAITING when the backoff had already passed by the time the outcome was written
    retried = [e for e in job.history if e.state in (JobState.DELAYED, JobState.WAITING) and e.note != "added"]
    assert [e.note for e in retried] == ["RuntimeError: boom 1", "RuntimeError: boom 2"]


async def test_exponential_backoff_then_failed(
    worker: jobkit.Worker, submit: Callable[..., Any], backend: Backend, qname: str, watch: Any
) -> None:
    async with watch(backend, qname) as w:
        h = await submit(always_fails)
        [retry] = await w.until(lambda e: e.event == "retrying")
        delayed = await backend.get(qname, h.id)
        assert delayed is not None and delayed.state in (JobState.DELAYED, JobState.ACTIVE, JobState.FAILED)
    with pytest.raises(jobkit.JobFailed, match="ValueError: nope") as info:
        await h.result(timeout=10)
    job = info.value.job
    assert job.state is JobState.FAILED and job.attempts == 2
    assert job.traceback is not None and "raise ValueError" in job.traceback
    assert retry.attempt == 1
    assert jobkit.Backoff.exponential(0.1, factor=3).seconds(1) == pytest.approx(0.1)
    assert jobkit.Backoff.exponential(0.1, factor=3).seconds(3) == pytest.approx(0.9)
    assert jobkit.Backoff.exponential(1, factor=10, max_delay=50).seconds(4) == 50


async def test_unrecoverable_skips_retries(worker: jobkit.Worker, submit: Callable[..., Any]) -> None:
    h = await submit(unrecoverable)
    with pytest.raises(jobkit.JobFailed) as info:
        await h.result(timeout=10)
    assert info.value.job.attempts == 1
    error = info.value.job.error or ""
    assert "bad input, do not retry" in error and "4 retries skipped" in error


async def test_timeout_per_attempt(worker: jobkit.Worker, submit: Callable[..., Any]) -> None:
    h = await submit(slow)
    with pytest.raises(jobkit.JobFailed, match="timed out after 0.2s") as info:
        await h.result(timeout=10)
    assert info.value.job.attempts == 2


async def test_result_not_json_fails_clearly(worker: jobkit.Worker, submit: Callable[..., Any]) -> None:
    h = await submit(bad_result)
    with pytest.raises(jobkit.JobFailed, match="not JSON-serialisable") as info:
        await h.result(timeout=10)
    assert info.value.job.attempts == 1
    with pytest.raises(jobkit.JobFailed, match="not JSON-serialisable.*Out of range float"):
        await (await submit(nan_result)).result(timeout=10)


async def test_unknown_task_fails_clearly(worker: jobkit.Worker, backend: Backend, qname: str) -> None:
    job = await jobkit.Queue(qname, backend=backend).add("no.such.task", {"x": 1})
    done = await jobkit.JobHandle(job, backend).wait(timeout=10)
    assert done.state is JobState.FAILED
    assert done.error is not None and "no task named 'no.such.task'" in done.error and "Worker([...])" in done.error


async def test_structured_progress(worker: jobkit.Worker, submit: Callable[..., Any]) -> None:
    h = await submit(reports)
    seen = [p async for p in h.progress()]
    assert seen[-1].percent == 100 and seen[-1].message == "step 4" and seen[-1].extra == {"step": 4, "of": 4}
    assert [p.percent for p in seen] == sorted(p.percent for p in seen)
    job = await h.job()
    assert job.progress.percent == 100 and job.progress.extra["of"] == 4


async def test_checkpoint_resumes_next_attempt(worker: jobkit.Worker, submit: Callable[..., Any]) -> None:
    h = await submit(resumable, 5)
    assert await h.result(timeout=10) == [0, 1, 2, 3, 4]
    job = await h.job()
    assert job.attempts == 2 and job.checkpoint == [0, 1, 2, 3, 4]


async def test_a_result_wait_that_times_out_leaves_the_handle_usable(backend: Backend, qname: str) -> None:
    """No worker yet: result(timeout=) gives up with JobTimeout in about that time (the waiting read is given up,
    nothing of the handle's is left behind); the same handle then gets the result once a worker runs the job."""
    job = await jobkit.Queue(qname, backend=backend).add(add, {"a": 4, "b": 5})
    handle = jobkit.JobHandle(job, backend)
    started = asyncio.get_running_loop().time()
    with pytest.raises(jobkit.JobTimeout, match="not finished after 0.3s"):
        await handle.result(timeout=0.3)
    assert asyncio.get_running_loop().time() - started < 3
    async with jobkit.Worker(ALL, backend=backend, queues=[qname], handle_signals=False):
        assert await handle.result(timeout=10) == 9


async def test_cancel_waiting_and_delayed(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    waiting, delayed = await q.add(add, {"a": 1, "b": 1}), await q.add(add, {"a": 1, "b": 1}, delay=60)
    for j in (waiting, delayed):
        c = await q.cancel(j.id)
        assert c.state is JobState.CANCELLED
    with pytest.raises(jobkit.JobCancelled):
        await jobkit.JobHandle(waiting, backend).result(timeout=5)
    counts = await q.counts()
    assert counts.cancelled == 2 and counts.waiting == counts.delayed == 0
    assert (await backend.claim(qname, "w", limit=5, lease=5, now=delayed.run_at + 1)).jobs == []


async def test_cancel_active_cooperative(
    worker: jobkit.Worker, submit: Callable[..., Any], backend: Backend, qname: str, watch: Any
) -> None:
    async with watch(backend, qname) as w:
        h = await submit(cooperative)
        await w.until(lambda e: e.job_id == h.id and e.event == "progress")
        job = await h.cancel()
        assert job.state is JobState.ACTIVE and job.cancel_requested
        await w.until(lambda e: e.job_id == h.id and e.event == "cancel-requested")
    with pytest.raises(jobkit.JobCancelled):
        await h.result(timeout=10)
    assert (await h.job()).error == "cancelled while running"


async def test_cancel_active_stubborn_after_grace(
    worker: jobkit.Worker, submit: Callable[..., Any], backend: Backend, qname: str, watch: Any
) -> None:
    async with watch(backend, qname) as w:
        h = await submit(stubborn)
        await w.until(lambda e: e.job_id == h.id and e.event == "progress")
        await h.cancel()
    done = await h.wait(timeout=10)
    assert done.state is JobState.CANCELLED
    assert worker.active == 0


async def test_every_transition_emits_an_event(
    worker: jobkit.Worker, submit: Callable[..., Any], backend: Backend, qname: str, watch: Any
) -> None:
    async with watch(backend, qname) as w:
        h = await submit(flaky, qname + "-ev")
        await h.result(timeout=10)
        evs = await w.until(lambda e: e.job_id == h.id and e.event == "completed")
        mine = [e.event for e in w.seen if e.job_id == h.id]
    assert evs[0].state is JobState.COMPLETED
    assert mine == ["added", "active", "retrying", "active", "retrying", "active", "completed"]
    ids = [e.id for e in w.seen]
    assert len(set(ids)) == len(ids) and all(ids)


async def test_queue_events_resume_from_id(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add("t", 1)
    await q.add("t", 2)
    replay: list[jobkit.JobEvent] = []
    async for ev in q.events(since="0"):
        replay.append(ev)
        if len(replay) == 2:
            break
    assert [e.event for e in replay] == ["added", "added"]
    await q.add("t", 3)
    after: list[jobkit.JobEvent] = []
    async for ev in q.events(since=replay[0].id):
        after.append(ev)
        if len(after) == 2:
            break
    assert after[0].id == replay[1].id and after[1].event == "added"


async def test_worker_heartbeat_visible(worker: jobkit.Worker, backend: Backend, qname: str) -> None:
    import time

    alive = await backend.workers(time.time(), qname)
    assert [w.id for w in alive] == [worker.id]
    assert alive[0].concurrency == 4 and "c.add" in alive[0].names
    assert await backend.workers(time.time(), "another-queue") == []


async def test_heartbeat_gone_after_stop(backend: Backend, qname: str) -> None:
    import time

    w = jobkit.Worker([add], backend=backend, queues=[qname], handle_signals=False)
    async with w:
        assert len(await backend.workers(time.time(), qname)) == 1
    assert await backend.workers(time.time(), qname) == []


gate: dict[str, asyncio.Event] = {}
all_in: dict[str, asyncio.Event] = {}  # set when 7 gated jobs have started
started: dict[str, int] = {}


@jobkit.task(name="c.gated")
async def gated(ctx: jobkit.Context, key: str) -> int:
    started[key] = started.get(key, 0) + 1
    if started[key] == 7:
        all_in[key].set()
    await asyncio.wait_for(gate[key].wait(), 20)
    return started[key]


async def test_small_claim_batches_still_fill_every_slot(backend: Backend, qname: str) -> None:
    """claim_batch=3 with concurrency=7: the worker keeps claiming until all 7 slots run (here they must, since
    every job waits for the gate that opens only once 7 have started), then takes the rest as slots free."""
    gate[qname], all_in[qname], started[qname] = asyncio.Event(), asyncio.Event(), 0
    q = jobkit.Queue(qname, backend=backend)
    jobs = await q.add_bulk(gated, [qname] * 10)
    w = jobkit.Worker([gated], backend=backend, queues=[qname], concurrency=7, claim_batch=3, handle_signals=False)
    async with w:
        await asyncio.wait_for(all_in[qname].wait(), 20)
        assert w.active == 7 and started[qname] == 7  # never more than concurrency
        gate[qname].set()
        results = [await jobkit.JobHandle(j, backend, gated).result(timeout=20) for j in jobs]
    assert sorted(results)[-1] == 10 and (await q.counts()).completed == 10


async def test_default_claim_batch_follows_the_backend(backend: Backend, qname: str) -> None:
    """Smaller claims where two overlap (Redis), larger where claims go one at a time; a given one is kept."""
    async with jobkit.Worker(ALL, backend=backend, queues=[qname], handle_signals=False) as w:
        assert w.claim_batch == (12 if backend.claims_overlap else 16)
    async with jobkit.Worker(ALL, backend=backend, queues=[qname], claim_batch=5, handle_signals=False) as w:
        assert w.claim_batch == 5


def test_claim_batch_must_be_positive() -> None:
    with pytest.raises(jobkit.ConfigError, match="claim_batch must be at least 1"):
        jobkit.Worker([gated], claim_batch=0)


running_now: dict[str, list[int]] = {}  # key -> [running now, most at once, ran]
all_ran: dict[str, asyncio.Event] = {}


@jobkit.task(name="c.counted")
async def counted(ctx: jobkit.Context, key: str) -> None:
    count = running_now[key]
    count[0] += 1
    count[1] = max(count[1], count[0])
    await asyncio.sleep(0.002)
    count[0] -= 1
    count[2] += 1
    if count[2] == 200:
        all_ran[key].set()


async def test_overlapping_claims_never_exceed_concurrency(backend: Backend, qname: str) -> None:
    """With a backlog a worker keeps a second claim under way; together they never ask for more than the free
    slots, so no more than `concurrency` jobs ever run at once."""
    running_now[qname], all_ran[qname] = [0, 0, 0], asyncio.Event()
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk(counted, [qname] * 200)
    w = jobkit.Worker([counted], backend=backend, queues=[qname], concurrency=5, claim_batch=2, handle_signals=False)
    async with w:
        await asyncio.wait_for(all_ran[qname].wait(), 30)
    assert (await q.counts()).completed == 200
    assert running_now[qname][1] == 5, f"at most 5 jobs at once, and all 5 slots used; saw {running_now[qname][1]}"
