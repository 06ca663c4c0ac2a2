"""Redis: a job added while a worker of the same backend instance waits for work is claimed for that worker by the
add itself (see Offer), so it needs no claim of its own; everything a claim respects still holds. The end of a job
that a waiter of the finishing instance waits for comes back in the finish's answer, not through its inbox."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import jobkit
from jobkit.backends import from_url
from jobkit.backends._redis_readers import Inbox
from jobkit.backends.redis import RedisBackend
from jobkit.errors import BackendError
from jobkit.models import Outcome

REDIS_URL = os.environ.get("JOBKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
QUEUE = "handover"
ran: Counter[int] = Counter()


@jobkit.task(name="handover.echo", queue=QUEUE)
async def echo(ctx: jobkit.Context, payload: dict[str, int]) -> int:
    ran[payload["i"]] += 1
    return payload["i"]


@pytest.fixture
async def backend() -> AsyncIterator[RedisBackend]:
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        await raw.ping()  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - any failure means no test Redis
        await raw.aclose()
        pytest.skip(f"Redis at {REDIS_URL} is not available: {exc}")
    await raw.flushdb()
    b = from_url(REDIS_URL)
    assert isinstance(b, RedisBackend)
    await b.open()
    ran.clear()
    yield b
    await b.close()
    await raw.flushdb()
    await raw.aclose()


async def _wake_entries() -> int:
    """Entries written to the queue's wake stream (the one XREAD by workers waiting for work) so far."""
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        info = await raw.xinfo_stream(f"jobkit:{{{QUEUE}}}:wake")
    except aioredis.ResponseError:  # no such stream yet
        return 0
    finally:
        await raw.aclose()
    return int(info["entries-added"])


class _Scripts:
    """Counts the scripts a backend runs, by name."""

    def __init__(self, backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: Counter[str] = Counter()
        build = backend._evalsha

        def counted(name: str, *args: Any, **kw: Any) -> bytes:
            self.names[name] += 1
            return build(name, *args, **kw)

        monkeypatch.setattr(backend, "_evalsha", counted)


async def _serving(backend: RedisBackend, **kw: Any) -> tuple[jobkit.Worker, asyncio.Task[None]]:
    worker = jobkit.Worker([echo], backend=backend, queues=[QUEUE], handle_signals=False, **kw)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 5)
    return worker, task


async def _idle(worker: jobkit.Worker, backend: RedisBackend) -> None:
    """Until the worker waits with an offer (bounded): the state the hand-over needs."""
    deadline = time.monotonic() + 5
    while not backend._offers.get(QUEUE):
        assert time.monotonic() < deadline, "the worker never waited with an offer"
        await asyncio.sleep(0.005)


async def _stop(worker: jobkit.Worker, task: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(task, 10)


async def test_a_job_added_while_a_worker_here_waits_needs_no_claim(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, task = await _serving(backend)
    try:
        await _idle(worker, backend)
        scripts = _Scripts(backend, monkeypatch)
        read = Counter[str]()
        deliver = Inbox.deliver
        monkeypatch.setattr(Inbox, "deliver", lambda inbox, replies: (read.update([inbox.queue]),
                                                                       deliver(inbox, replies))[-1])
        woke = await _wake_entries()
        for i in range(20):
            assert await asyncio.wait_for(jobkit.run(echo, {"i": i}, backend=backend), 5) == i
            await _idle(worker, backend)
        # Each job: its add (which claimed it) and its finish; never a claim, nor a watch of the handle.
        assert scripts.names["add"] == 20 and scripts.names["claim"] == 0 and scripts.names["watch"] == 0
        assert scripts.names["finish_claim"] + scripts.names["finish"] == 20
        assert await _wake_entries() == woke  # handed over: no other worker was woken for them
        assert not read  # each end came back in its finish's answer, not through this instance's inbox
    finally:
        await _stop(worker, task)
    assert ran == Counter(range(20))


async def test_back_to_back_runs_are_handed_over_without_waiting_for_the_worker_to_idle(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer that ends a job wakes its waiter and sends the worker back to wait in the same step; the worker's
    offer is lent when it starts waiting, not a loop turn later, so the waiter's next add finds it."""
    worker, task = await _serving(backend)
    try:
        await _idle(worker, backend)
        scripts = _Scripts(backend, monkeypatch)
        for i in range(20):
            handle = await jobkit.submit(echo, {"i": i}, backend=backend)
            assert await handle.result(timeout=5) == i
        assert scripts.names["add"] == 20 and scripts.names["claim"] == 0
    finally:
        await _stop(worker, task)
    assert ran == Counter(range(20))


async def test_a_paused_queue_keeps_the_job_waiting(backend: RedisBackend) -> None:
    worker, task = await _serving(backend)
    try:
        await _idle(worker, backend)
        await backend.set_paused(QUEUE, True)
        handle = await jobkit.submit(echo, {"i": 1}, backend=backend)
        stored = await backend.get(QUEUE, handle.id)
        assert stored is not None and stored.state is jobkit.JobState.WAITING and not worker.active
        await backend.set_paused(QUEUE, False)
        assert await asyncio.wait_for(handle.result(), 5) == 1
    finally:
        await _stop(worker, task)


async def test_a_delayed_job_is_not_handed_over_early_and_still_runs_when_due(backend: RedisBackend) -> None:
    worker, task = await _serving(backend)
    try:
        await _idle(worker, backend)
        handle = await jobkit.submit(echo, {"i": 7}, backend=backend, delay=0.3)
        stored = await backend.get(QUEUE, handle.id)
        assert stored is not None and stored.state is jobkit.JobState.DELAYED
        assert await asyncio.wait_for(handle.result(), 5) == 7
        ended = await backend.get(QUEUE, handle.id)
        assert ended is not None and ended.started_at is not None and ended.started_at >= stored.run_at
    finally:
        await _stop(worker, task)


async def test_a_bulk_add_hands_over_what_fits_and_wakes_for_the_rest(backend: RedisBackend) -> None:
    """The offer is the worker's free slots (4): the add claims 4 for it; the other 46 wake workers as usual, and
    every job runs once."""
    worker, task = await _serving(backend, concurrency=4)
    other = from_url(REDIS_URL)  # a worker of another instance (another process, as far as Redis can tell)
    await other.open()
    helper, helper_task = await _serving(other, concurrency=4)  # type: ignore[arg-type]
    try:
        await _idle(worker, backend)
        woke = await _wake_entries()
        queue = jobkit.Queue(QUEUE, backend=backend)
        added = await queue.add_bulk(echo, ({"i": i} for i in range(50)))
        handles = [await queue.handle(j.id) for j in added]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 10)
        assert results == list(range(50))
        assert await _wake_entries() == woke + 1  # jobs were left claimable: the add woke workers
    finally:
        await _stop(helper, helper_task)
        await other.close()
        await _stop(worker, task)
    assert ran == Counter(range(50))


async def test_an_add_whose_answer_is_lost_leaves_the_worker_serving(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The add ran (and claimed for the worker), but its answer never came: the worker hears an error instead of
    the jobs, keeps serving, and the lost job runs again once its lease expires."""
    worker, task = await _serving(backend, lease=0.5, maintenance_every=0.2)
    try:
        await _idle(worker, backend)
        send = backend._send_spread
        lost = asyncio.Event()

        async def answer_lost(*args: Any, **kw: Any) -> Any:
            await send(*args, **kw)
            lost.set()
            raise BackendError("connection lost (test)")

        monkeypatch.setattr(backend, "_send_spread", answer_lost)
        with pytest.raises(BackendError):
            await jobkit.submit(echo, {"i": 1}, backend=backend)
        monkeypatch.undo()
        assert lost.is_set()
        assert await asyncio.wait_for(jobkit.run(echo, {"i": 2}, backend=backend), 5) == 2
        deadline = time.monotonic() + 10
        while ran[1] == 0:  # recovered after its lease (maintenance's period): no event to wait on here
            assert time.monotonic() < deadline, "the job whose add answer was lost never ran"
            await asyncio.sleep(0.05)
    finally:
        await _stop(worker, task)
    assert ran == Counter({1: 1, 2: 1})


async def test_an_end_before_its_watch_in_the_same_instance_still_reaches_the_watch(backend: RedisBackend) -> None:
    """A job added here and finished here before its handle watches it: its end waits for that watch."""
    [added] = await backend.add([jobkit.Job(id="early", name="handover.echo", queue=QUEUE)])
    [claimed] = (await backend.claim(QUEUE, "w", limit=1, lease=30, now=time.time())).jobs
    now = time.time()
    await backend.finish(QUEUE, "w", [Outcome(job_id=claimed.id, state=jobkit.JobState.COMPLETED, result=5,
                                                     run_at=now)], now)
    events, seen = await backend.watch(QUEUE, added.id, added)
    try:
        assert seen is added  # no read: the end itself comes
        ev = await asyncio.wait_for(anext(events), 5)
        assert (ev.job_id, ev.state, ev.carried_result) == ("early", jobkit.JobState.COMPLETED, (5,))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
