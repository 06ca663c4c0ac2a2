"""`submit`, `run` and `run_sync`: enqueue a task and get a handle or its result, never stranding the caller.

When no worker is alive for the task's queue and the backend is local (memory, SQLite), the job runs
in an embedded Worker on the caller's own event loop (`embedded.py`), so a notebook cell returns and the job
goes on; it stays until no job it could run is left, retries and delays included.

`degrade=` says what to do when the job's Redis does not answer: "inline" runs it here at once (on an in-process
memory backend, with its retries and progress), "spool" keeps it in the local spool (`spool.py`) to be forwarded
under the same id when Redis answers again.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Literal

from typing_extensions import TypeVar

from . import spool
from .backends import REDIS_SCHEMES, Backend
from .config import BackendLike, get_backend, mask_url, resolve_url, shared_backend
from .embedded import ensure_worker, shutdown
from .errors import BackendUnavailable, ConfigError
from .handle import JobHandle
from .models import Backoff, ContinuePartial, FailFast, WaitAll
from .queue import Dependency, Queue
from .task import Task, lookup

__all__ = ["INLINE_URL", "Degrade", "ensure_worker", "run", "run_sync", "shutdown", "submit"]

R = TypeVar("R", default=Any)  # a task given by name: its result type is unknown here
Degrade = Literal["inline", "spool"]
INLINE_URL = "memory://jobkit-inline"  # where degrade="inline" runs jobs: this process's memory, its embedded worker
_degraded: set[str] = set()  # backends (masked URLs) said to be down, until a job reaches them again


async def submit(
    task: Task[R] | str, payload: Any = None, *, backend: BackendLike = None, job_id: str | None = None,
    delay: float | None = None, priority: int | None = None, attempts: int | None = None,
    timeout: float | None = None, backoff: Backoff | None = None, depends_on: Sequence[Dependency] | None = None,
    policy: FailFast | WaitAll | ContinuePartial | str | None = None, degrade: Degrade | None = None,
    owner: str | None = None, tags: dict[str, str] | None = None, webhook: str | None = None,
) -> JobHandle[R]:
    """Enqueue `task` with `payload` and return a handle; runs it in-process if no worker serves its queue.

    `depends_on`: jobs it waits for first; `owner`, `tags`: whom it is for and labels to find it by (see
    `Queue.add`). `degrade`: when the job's Redis does not answer,
    "inline" runs the job in this process now, "spool" keeps it in the local spool until Redis answers again
    (see docs/degrade.md); without it, BackendUnavailable."""
    t: Task[R] = task if isinstance(task, Task) else lookup(task)
    if degrade is not None:
        if degrade not in ("inline", "spool"):
            raise ConfigError(f"degrade is 'inline' (run here now) or 'spool' (keep it until Redis answers), not"
                              f" {degrade!r}")
        if depends_on or policy is not None:
            raise ConfigError("degrade= cannot keep a job that waits for others: its dependencies live in Redis")
        target = _degradable(backend)
        if target is not None:
            return await _submit_or_degrade(t, payload, target, degrade, job_id=job_id, delay=delay,
                                            priority=priority, attempts=attempts, timeout=timeout, backoff=backoff,
                                            owner=owner, tags=tags, webhook=webhook)
    b = await get_backend(backend)
    job = await Queue(t.queue, backend=b).add(t, payload, job_id=job_id, delay=delay, priority=priority,
                                              attempts=attempts, timeout=timeout, backoff=backoff,
                                              depends_on=depends_on, policy=policy, owner=owner, tags=tags,
                                              webhook=webhook)
    if not job.finished:
        await ensure_worker(b, t.queue)
    return JobHandle(job, b, t)


def _degradable(backend: BackendLike) -> Backend | None:
    """The Redis backend a `degrade=` job is meant for; None when the job goes to a local backend (nothing to do)."""
    if isinstance(backend, Backend):
        return None if backend.is_local else backend
    url = resolve_url(backend)[0]
    if url.partition("://")[0].lower() not in REDIS_SCHEMES:
        return None
    return shared_backend(url)


async def _submit_or_degrade(t: Task[R], payload: Any, b: Backend, degrade: Degrade, *, job_id: str | None,
                             **options: Any) -> JobHandle[R]:
    jobs = Queue(t.queue, backend=b)._prepare(t, [payload], job_ids=[job_id], now=time.time(), **options)
    where = mask_url(b.url)
    try:
        await b.open()
        job = (await b.add(jobs))[0]
    except BackendUnavailable as exc:
        if where not in _degraded:
            _degraded.add(where)
            log.warning("%s; degrade=%r: %s", exc, degrade, "running its jobs in this process" if degrade == "inline"
                        else f"keeping its jobs in the spool {spool.spool_path()} until it answers")
        if degrade == "inline":
            return await submit(t, payload, backend=INLINE_URL, job_id=jobs[0].id, **options)
        await asyncio.to_thread(spool.put, b, jobs)
        spool.ensure_forwarder(b)
        return JobHandle(jobs[0], b, t)
    _degraded.discard(where)
    if await asyncio.to_thread(spool.size, b):
        spool.ensure_forwarder(b)  # jobs spooled earlier, maybe by a process that ended
    return JobHandle(job, b, t)


async def run(
    task: Task[R] | str, payload: Any = None, *, backend: BackendLike = None, timeout: float | None = None,
    job_id: str | None = None, priority: int | None = None, attempts: int | None = None,
    degrade: Literal["inline"] | None = None, owner: str | None = None, tags: dict[str, str] | None = None,
) -> R:
    """Enqueue `task` and wait for its result (JobFailed, JobCancelled or JobTimeout otherwise).

    `degrade="inline"`: when the job's Redis does not answer, run the job in this process instead."""
    if degrade is not None and degrade != "inline":
        raise ConfigError(f"run() waits for the result, so degrade can only be 'inline', not {degrade!r}: use"
                          " submit(..., degrade='spool') to keep a job until Redis answers")
    handle = await submit(task, payload, backend=backend, job_id=job_id, priority=priority, attempts=attempts,
                          degrade=degrade, owner=owner, tags=tags)
    return await handle.result(timeout)


_thread_loops = threading.local()
EXIT_GRACE = 5.0  # seconds jobs still running in a script's embedded workers get at exit, before being handed back
log = logging.getLogger("jobkit")


def run_sync(
    task: Task[R] | str, payload: Any = None, *, backend: BackendLike = None, timeout: float | None = None,
    job_id: str | None = None, priority: int | None = None, attempts: int | None = None,
    degrade: Literal["inline"] | None = None, owner: str | None = None, tags: dict[str, str] | None = None,
) -> R:
    """`run` for code that cannot await: plain scripts, and notebook cells (re-entering the running loop)."""
    return _block_on(run(task, payload, backend=backend, timeout=timeout, job_id=job_id, priority=priority,
                         attempts=attempts, degrade=degrade, owner=owner, tags=tags))


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
