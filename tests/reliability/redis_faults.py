"""What the Redis fault tests share: settling a run after the fault, and stopping its producer and worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import jobkit
from jobkit.config import close_all
from jobkit.models import QueueCounts


def outcome(task: asyncio.Future[None]) -> str:
    """How a background task ended, for an assertion message."""
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return "returned" if exc is None else repr(exc)


async def settle(queue: jobkit.Queue, worker_task: asyncio.Future[None], done: Callable[[QueueCounts], bool],
                 timeout: float) -> QueueCounts:
    """Poll the queue's counts (no event says "all settled") until `done`, bounded; the worker must keep running."""
    deadline = time.monotonic() + timeout
    counts = await queue.counts()
    while not done(counts):
        assert time.monotonic() < deadline, f"jobs not all completed in {timeout}s: {counts}"
        assert not worker_task.done(), f"the worker stopped while settling: {outcome(worker_task)}"
        await asyncio.sleep(0.1)
        counts = await queue.counts()
    return counts


async def stop_run(stop_producing: asyncio.Event, worker: jobkit.Worker, producer_task: asyncio.Future[None],
                   worker_task: asyncio.Future[None]) -> None:
    """Stop the producer and the worker, bounded. A task that ended early is awaited here too, so its exception
    is retrieved (and re-raised unless an assertion already carries the failure)."""
    stop_producing.set()
    worker.stop()
    done, pending = await asyncio.wait((producer_task, worker_task), timeout=15)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await close_all()
    for t in done:
        t.result()
