"""Embedded workers: the local fallback that runs a queue's jobs in the caller's process when no worker serves it.

An embedded worker lives on the caller's event loop. It stays while any job it could run is waiting, delayed
or retrying, or a handle of this process awaits one, and stops when none is left; `submit`, a waiting handle,
`Queue.retry_failed`/`retry` and `Queue.resume` start one again when they need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator

from .backends import Backend
from .task import registered
from .worker import Worker, serving_here

__all__ = ["EMBEDDED_IDLE_TIMEOUT", "awaiting", "ensure_worker", "shutdown", "wanted"]

log = logging.getLogger("jobkit")

EMBEDDED_IDLE_TIMEOUT = 2.0  # seconds with nothing running before an embedded worker checks whether work is left

_Key = tuple[int, str]  # (id(backend), queue)


class _LoopState:
    """This loop's embedded workers, their runner tasks, and the handles awaiting each queue."""

    def __init__(self) -> None:
        self.workers: dict[_Key, Worker] = {}
        self.runners: set[asyncio.Task[None]] = set()
        self.awaited: Counter[_Key] = Counter()


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()


def _state() -> _LoopState:
    loop = asyncio.get_running_loop()
    state = _loops.get(loop)
    if state is None:
        state = _loops[loop] = _LoopState()
    return state


async def ensure_worker(backend: Backend, queue: str) -> Worker | None:
    """Start an embedded worker for `queue` on this loop unless a worker is alive for it; returns it.

    Returns None for a backend that is not local, or when another (non-embedded) worker serves the queue.
    """
    if not backend.is_local:
        return None
    state = _state()
    key = (id(backend), queue)
    worker = state.workers.get(key)
    if worker is not None and not worker.stopping:
        worker.touch()  # new demand: an idle check under way must not stop it now
        worker.serve(registered(queue))  # tasks defined since it started (a later notebook cell)
        return worker
    if serving_here(backend, queue):
        return None
    alive = [w for w in await backend.workers(time.time(), queue) if not w.embedded]
    if alive:
        return None
    worker = state.workers.get(key)  # another caller may have started one while we looked
    if worker is not None and not worker.stopping:
        worker.touch()
        return worker
    awaited = state.awaited
    worker = Worker(registered(queue), backend=backend, queues=[queue], embedded=True,
                    idle_timeout=EMBEDDED_IDLE_TIMEOUT, concurrency=10, keep_alive=lambda: awaited[key] > 0)
    state.workers[key] = worker
    runner = asyncio.get_running_loop().create_task(_run(worker, state, key))
    state.runners.add(runner)
    runner.add_done_callback(state.runners.discard)
    await worker.started.wait()
    return worker


async def _run(worker: Worker, state: _LoopState, key: _Key) -> None:
    try:
        await worker.run()
    except Exception:
        log.exception("embedded worker for queue %s crashed", key[1])
    finally:
        if state.workers.get(key) is worker:
            del state.workers[key]


async def wanted(backend: Backend, queue: str) -> None:
    """Jobs of `queue` became runnable again (retried, resumed): on a local backend, make sure something runs them."""
    if backend.is_local and registered(queue):
        await ensure_worker(backend, queue)


@contextlib.asynccontextmanager
async def awaiting(backend: Backend, queue: str) -> AsyncIterator[None]:
    """While a handle awaits a job of `queue`, keep (or start) this loop's embedded worker for it."""
    if not backend.is_local:
        yield
        return
    key = (id(backend), queue)
    state = _state()
    state.awaited[key] += 1
    try:
        if registered(queue):
            await ensure_worker(backend, queue)
        yield
    finally:
        state.awaited[key] -= 1
        if state.awaited[key] <= 0:
            del state.awaited[key]


async def shutdown(grace: float | None = None) -> None:
    """Stop this loop's embedded workers (running jobs finish, within `grace` seconds if given, or are handed
    back) and spool forwarders (their jobs stay spooled), and close its backends."""
    from .config import close_all
    from .spool import stop_forwarders

    await stop_forwarders()
    state = _state()
    for w in list(state.workers.values()):
        if grace is not None:
            w.grace = min(w.grace, grace)
        w.stop()
    runners = list(state.runners)
    if runners:
        await asyncio.wait(runners)
    await close_all()
