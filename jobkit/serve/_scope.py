"""Jobs as a caller may see them: found across queues, listed and paged, followed — scoped to the caller's owner.

Every read passes the caller's owner to the backend, which filters with its indexes (never after the read).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import itertools
import json
import time
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from ..backends import Backend
from ..models import Job, JobEvent, JobState
from ..queue import Queue
from ._auth import TOKENS_QUEUE, Principal

if TYPE_CHECKING:
    from ._state import ServeState

__all__ = [
    "QueueNames", "decode_cursor", "encode_cursor", "events", "find", "page", "queue_names", "wait_finished",
]

RECHECK_EVERY = 2.0  # seconds without an event before a waiting request reads its job again


async def queue_names(backend: Backend) -> list[str]:
    """Every queue holding jobs (the API's own token records left out)."""
    return [q for q in await backend.queues() if q != TOKENS_QUEUE]


class QueueNames:
    """The backend's queue names, read again at most every `ttl` seconds (a job id is looked up in each)."""

    def __init__(self, backend: Backend, ttl: float = 2.0) -> None:
        self.backend, self.ttl = backend, ttl
        self._names: list[str] = []
        self._until = 0.0

    async def get(self, fresh: bool = False) -> tuple[list[str], bool]:
        """(names, read just now)."""
        now = time.monotonic()
        if fresh or now >= self._until:
            self._names, self._until = await queue_names(self.backend), now + self.ttl
            return self._names, True
        return self._names, False


async def _first(backend: Backend, names: list[str], job_id: str, owner: str | None) -> Job | None:
    """The job in the first of `names` that holds it, as `owner` may see it (another owner's job is none)."""
    for name in names:
        job = await Queue(name, backend=backend).get(job_id, owner=owner)
        if job is not None:
            return job
    return None


async def find(request: HTTPConnection, p: Principal) -> Job:
    """The job named by the request's path (and `?queue=`, else looked up in every queue) if the caller may see
    it; else 404 (also for another owner's job: its existence is never shown)."""
    s: ServeState = request.app.state.jobkit
    backend, job_id, queue = s.backend, request.path_params["job_id"], request.query_params.get("queue")
    if queue:
        job = await _first(backend, [queue], job_id, p.scope)
    else:
        known = s.names
        listed, fresh = await known.get()
        job = await _first(backend, listed, job_id, p.scope)
        if job is None and not fresh:  # a queue made since the names were read
            job = await _first(backend, [q for q in (await known.get(fresh=True))[0] if q not in listed], job_id,
                               p.scope)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}" + (f" in queue {queue!r}" if queue else ""))
    return job


def encode_cursor(offsets: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(offsets, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        data = None
    if not isinstance(data, dict) or not all(isinstance(k, str) and type(v) is int and v >= 0
                                             for k, v in data.items()):
        raise HTTPException(400, "invalid cursor: pass back the `next` value of the previous page")
    return data


async def page(
    backend: Backend, p: Principal, queues: list[str], *, states: Collection[JobState] | None, task: str | None,
    tag: str | None, limit: int, cursor: str | None,
) -> tuple[list[Job], str | None]:
    """Up to `limit` jobs of `queues` the caller may see (filtered by owner in the backend), newest first, from
    `cursor` on; and the cursor of the next page (or None)."""
    offsets = decode_cursor(cursor)
    wanted = list(states) if states else None
    found = await asyncio.gather(*(Queue(q, backend=backend).jobs(wanted, name=task, owner=p.scope, tag=tag,
                                                                  offset=offsets.get(q, 0), limit=limit)
                                   for q in queues))
    merged = heapq.merge(*found, key=lambda j: (-j.created_at, -j.seq))
    jobs = list(itertools.islice(merged, limit))
    more = any(len(f) == limit for f in found) or sum(len(f) for f in found) > len(jobs)
    for job in jobs:
        offsets[job.queue] = offsets.get(job.queue, 0) + 1
    return jobs, encode_cursor(offsets) if more else None


async def events(backend: Backend, job: Job, since: str | None) -> AsyncIterator[JobEvent]:
    """A live feed of the events of `job` (one the caller may see: `find` said so), after event `since` if given.

    Live when it returns, so a read of the job made after it misses nothing."""
    feed = await backend.subscribe(job.queue, since=since)

    async def of_job() -> AsyncIterator[JobEvent]:
        try:
            async for ev in feed:
                if ev.job_id == job.id and ev.owner == job.owner:
                    yield ev
        finally:
            await feed.aclose()  # type: ignore[attr-defined]

    return of_job()


async def wait_finished(backend: Backend, job: Job, timeout: float) -> Job:
    """The job once finished, or as it is after `timeout` seconds. Never starts a worker: workers run the jobs."""
    feed, now = await backend.watch(job.queue, job.id, job)
    current = now or job
    pending: asyncio.Future[JobEvent] | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not current.finished and (left := deadline - loop.time()) > 0:
            if pending is None:
                pending = asyncio.ensure_future(feed.__anext__())
            done, _ = await asyncio.wait((pending,), timeout=min(left, RECHECK_EVERY))
            if done:
                try:
                    ev = pending.result()
                except StopAsyncIteration:
                    break
                finally:
                    pending = None
                if ev.job_id != job.id or not ev.state.finished:
                    continue
            current = await backend.get(job.queue, job.id) or current
        return current
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await feed.aclose()  # type: ignore[attr-defined]
