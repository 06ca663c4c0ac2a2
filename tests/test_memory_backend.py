"""memory:// only: events and histories kept as plain tuples, and copies that share nothing with the store."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import jobkit
from jobkit.backends.memory import ENTRIES_KEPT, MemoryBackend
from jobkit.models import HistoryEntry, Job, JobEvent, JobOptions, JobState, Outcome, Progress

Q = "mem"


def job(job_id: str) -> Job:
    return Job(id=job_id, name="t", queue=Q, data={"n": job_id})


async def run_one(backend: MemoryBackend, job_id: str, worker: str = "w") -> None:
    await backend.add([job(job_id)])
    [claimed] = (await backend.claim(Q, worker, limit=1, lease=30, now=time.time())).jobs
    assert await backend.set_progress(Q, worker, claimed.id, Progress(percent=50, message="half", extra={"k": 1}))
    await backend.finish(Q, worker, [Outcome(job_id=claimed.id, state=JobState.COMPLETED, result=7)], time.time())


async def test_replayed_events_equal_the_live_ones() -> None:
    backend = MemoryBackend()
    await backend.open()
    live = await backend.subscribe(Q)
    await run_one(backend, "a")
    seen = [await asyncio.wait_for(live.__anext__(), 1) for _ in range(4)]
    await live.aclose()  # type: ignore[attr-defined]
    await run_one(backend, "b")  # nobody subscribes: kept as rows only

    replay = await backend.subscribe(Q, since="0")
    replayed = [await asyncio.wait_for(replay.__anext__(), 1) for _ in range(8)]
    await replay.aclose()  # type: ignore[attr-defined]
    await backend.close()

    assert replayed[:4] == seen
    assert [e.event for e in replayed] == ["added", "active", "progress", "completed"] * 2
    for ev in replayed:
        assert isinstance(ev, JobEvent) and isinstance(ev.state, JobState) and isinstance(ev.id, str)
    assert [int(e.id) for e in replayed] == sorted(int(e.id) for e in replayed)
    progress = replayed[6].progress
    assert progress is not None and progress.extra == {"k": 1} and replayed[6].state is JobState.ACTIVE
    assert replayed[7].state is JobState.COMPLETED and replayed[7].attempt == 1


async def test_history_of_copies_and_their_independence() -> None:
    backend = MemoryBackend()
    await run_one(backend, "a", worker="w1")
    got = await backend.get(Q, "a")
    assert got is not None
    assert [(h.state, h.attempt, h.worker, h.note) for h in got.history] == [
        (JobState.WAITING, 0, None, "added"), (JobState.ACTIVE, 1, "w1", ""), (JobState.COMPLETED, 1, None, ""),
    ]
    assert all(isinstance(h, HistoryEntry) for h in got.history)
    got.history.clear()
    got.attempts = 99
    again = await backend.get(Q, "a")
    assert again is not None and len(again.history) == 3 and again.attempts == 1


async def test_retained_events_and_histories_are_left_out_of_the_gc() -> None:
    backend = MemoryBackend()
    for i in range(20):
        await run_one(backend, f"j{i}")
    gc.collect()
    rows = list(backend._hub._recent[Q])
    notes = [n for ns in backend._queues[Q].notes.values() for n in ns]
    assert len(rows) == 80 and len(notes) == 60
    assert not any(gc.is_tracked(r) for r in rows if r[8] is None)  # a progress row holds its Progress
    assert not any(gc.is_tracked(n) for n in notes)



class CountingBackend(MemoryBackend):
    """Counts the calls of `finish`, which copies every job it finishes."""

    def __init__(self) -> None:
        super().__init__()
        self.finish_calls = 0

    async def finish(self, *args: Any, **kwargs: Any) -> list[Job]:
        self.finish_calls += 1
        return await super().finish(*args, **kwargs)


async def test_a_worker_writes_its_outcomes_with_its_claims() -> None:
    """A running worker on memory:// finishes jobs through `finish_and_claim`, whose finished jobs nobody reads, so
    it copies none of them (`finish` copies each: about a third of the e2e gain of issue 13 item 6)."""
    backend, n = CountingBackend(), 50

    @jobkit.task(queue="mem-combined")
    async def noop(ctx: Any) -> None:
        return None

    queue = jobkit.Queue("mem-combined", backend=backend)
    events = await backend.subscribe("mem-combined")
    async with jobkit.Worker([noop], backend=backend, concurrency=10, handle_signals=False):
        for _ in range(n):
            await queue.add(noop)
        completed = 0
        async with asyncio.timeout(10):
            async for ev in events:
                completed += ev.event == "completed"
                if completed == n:
                    break
        assert backend.finish_calls == 0  # written while it runs, with its claims
    assert (await backend.counts("mem-combined")).completed == n


async def test_a_stored_job_costs_the_gc_four_objects_and_copies_stay_their_own() -> None:
    """A job stored with untouched progress shares the store's placeholder progress and empty history (the cyclic
    GC's full collections walk every stored job: issue 13 item 6); every copy still gets its own."""
    backend, n, options = MemoryBackend(), 5000, JobOptions()  # one task's jobs share its options
    await backend.add([job("warm")])
    gc.collect()
    before = len(gc.get_objects())
    await backend.add([Job(id=f"n{i}", name="t", queue=Q, options=options) for i in range(n)])
    gc.collect()
    # Per job: the job, its __dict__, its fields set, its notes (was 8); plus the history models kept for sharing.
    assert len(gc.get_objects()) - before <= 4 * n + 3 * ENTRIES_KEPT + 50

    a, b = await backend.get(Q, "n1"), await backend.get(Q, "n2")
    assert a is not None and b is not None
    a.progress.message = "changed in place"
    a.history.append(a.history[0])
    again = await backend.get(Q, "n1")
    assert again is not None and again.progress == Progress() and len(again.history) == 1
    assert b.progress == Progress() and a.progress is not b.progress and a.history is not b.history
    [claimed] = (await backend.claim(Q, "w", limit=1, lease=30, now=time.time())).jobs
    assert await backend.set_progress(Q, "w", claimed.id, Progress(percent=10))
    now = await backend.get(Q, claimed.id)
    assert now is not None and now.progress.percent == 10
