"""`submit`, `run` and `run_sync`: enqueue a task and get a handle or its result, never stranding the caller.

When no worker is alive for the task's queue and the backend is local (memory, SQLite), the job runs
in an embedded Worker on the caller's own event loop (`embedded.py`), so a notebook cell returns and the job
goes on; it stays until no job it could run is left, retries and delays included.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

from typing_extensions import TypeVar

from .config import BackendLike, get_backend
from .embedded import ensure_worker, shutdown
from .handle import JobHandle
from .models import Backoff, ContinuePartial, FailFast, WaitAll
from .queue import Dependency, Queue
from .task import Task, lookup

__all__ = ["ensure_worker", "run", "run_sync", "shutdown", "submit"]

R = TypeVar("R", default=Any)  # a task given by name: its result type is unknown here


async def submit(
    task: Task[R] | str, payload: Any = None, *, backend: BackendLike = None, job_id: str | None = None,
    delay: float | None = None, priority: int | None = None, attempts: int | None = None,
    timeout: float | None = None, backoff: Backoff | None = None, depends_on: Sequence[Dependency] | None = None,
    policy: FailFast | WaitAll | ContinuePartial | str | None = None,
) -> JobHandle[R]:
    """Enqueue `task` with `payload` and return a handle; runs it in-process if no worker serves its queue.

    `depends_on`: jobs it waits for first (see `Queue.add`)."""
    t: Task[R] = task if isinstance(task, Task) else lookup(task)
    b = await get_backend(backend)
    job = await Queue(t.queue, backend=b).add(t, payload, job_id=job_id, delay=delay, priority=priority,
                                              attempts=attempts, timeout=timeout, backoff=backoff,
                                              depends_on=depends_on, policy=policy)
    if not job.finished:
        await ensure_worker(b, t.queue)
    return JobHandle(job, b, t)


async def run(
    task: Task[R] | str, payload: Any = None, *, backend: BackendLike = None, timeout: float | None = None,
    job_id: str | None = None, priority: int | None = None, attempts: int | None = None,
) -> R:
    """Enqueue `task` and wait for its result (JobFailed, JobCancelled or JobTimeout otherwise)."""
    handle = await submit(task, payload, backend=backend, job_id=job_id, priority=priority, attempts=attempts)
    return await handle.result(timeout)


_thread_loops = threading.local()
EXIT_GRACE = 5.0  # seconds jobs still running in a script's embedded workers get at exit, before being handed back
log = logging.getLogger("jobkit")


def run_sync(
    task: Task[R] | str, payload: Any = None, *, backend: BackendLike = None, timeout: float | None = None,
    job_id: str | None = None, priority: int | None = None, attempts: int | None = None,
) -> R:
    """`run` for code that cannot await: plain scripts, and notebook cells (re-entering the running loop)."""
    return _block_on(run(task, payload, backend=backend, timeout=timeout, job_id=job_id, priority=priority,
                         attempts=attempts))


def _block_on(coro: Coroutine[Any, Any, R]) -> R:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        # One loop per thread, kept between calls, so backends and embedded workers carry over.
        own: asyncio.AbstractEventLoop | None = getattr(_thread_loops, "loop", None)
        if own is None or own.is_closed():
            own = _thread_loops.loop = asyncio.new_event_loop()
            atexit.register(_close_at_exit, own)
        return own.run_until_complete(coro)
    # Inside a running loop (a notebook cell): the job may run on this very loop, so re-enter it.
    # A thread-based wrapper would deadlock here. Patch only now, never at import.
    import nest_asyncio2

    nest_asyncio2.apply(loop, run_close_loop=True)  # asyncio.run() elsewhere keeps closing its loops
    return loop.run_until_complete(coro)


def _close_at_exit(loop: asyncio.AbstractEventLoop) -> None:
    """A script ends: stop the embedded workers of its run_sync loop (their outcomes written, their heartbeats
    gone, running jobs handed back after EXIT_GRACE), close its backends and the loop."""
    if loop.is_closed() or loop.is_running():
        return
    try:
        loop.run_until_complete(shutdown(grace=EXIT_GRACE))
    except Exception:  # the interpreter is going away: say so, never raise from atexit
        log.exception("jobkit: stopping the embedded workers at exit failed")
    finally:
        loop.close()
