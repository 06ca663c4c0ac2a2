"""`JobsFeed`: the latest state of many jobs, kept current by one event subscription per queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..backends import Backend
from ..handle import JobHandle
from ..models import Job, JobEvent

__all__ = ["JobsFeed"]

Key = tuple[str, str]  # (queue, job id)


class JobsFeed:
    """Follows `handles` until each job has finished (or is gone), calling `on_change(job)` on every change.

    A thousand jobs in one queue cost one subscription, not a thousand: events are routed by job id.
    """

    def __init__(self, handles: Sequence[JobHandle[Any]], on_change: Callable[[Job], None]) -> None:
        self.jobs: dict[Key, Job] = {}
        for h in handles:
            self.jobs.setdefault((h.queue, h.id), h.last)
        self._on_change = on_change
        self._groups: dict[tuple[int, str], tuple[Backend, str, set[str]]] = {}
        for h in handles:
            self._groups.setdefault((id(h.backend), h.queue), (h.backend, h.queue, set()))[2].add(h.id)
        self.gone: set[Key] = set()  # removed from the backend before they finished

    @property
    def finished(self) -> bool:
        return all(job.finished or key in self.gone for key, job in self.jobs.items())

    async def run(self) -> None:
        """Follow every job until all have finished, or the backend's subscriptions end."""
        followers = [asyncio.ensure_future(self._follow(b, q, ids)) for b, q, ids in self._groups.values()]
        try:
            await asyncio.gather(*followers)
        finally:
            for f in followers:
                f.cancel()

    async def _follow(self, backend: Backend, queue: str, ids: set[str]) -> None:
        events: AsyncIterator[JobEvent] = await backend.subscribe(queue)
        try:
            for job_id in ids:  # read after subscribing, so no transition falls in between
                await self._refresh(backend, queue, job_id)
            open_ids = {i for i in ids if not self._done((queue, i))}
            if not open_ids:
                return
            async for ev in events:
                if ev.job_id not in open_ids:
                    continue
                key = (queue, ev.job_id)
                if ev.event == "progress" and ev.progress is not None:
                    job = self.jobs[key]
                    if not job.finished:
                        self._set(key, job.model_copy(update={"progress": ev.progress}))
                else:
                    await self._refresh(backend, queue, ev.job_id)
                if self._done(key):
                    open_ids.discard(ev.job_id)
                    if not open_ids:
                        return
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    def _done(self, key: Key) -> bool:
        return self.jobs[key].finished or key in self.gone

    async def _refresh(self, backend: Backend, queue: str, job_id: str) -> None:
        job = await backend.get(queue, job_id)
        if job is None:
            self.gone.add((queue, job_id))
            self._on_change(self.jobs[(queue, job_id)])
        else:
            self._set((queue, job_id), job)

    def _set(self, key: Key, job: Job) -> None:
        self.jobs[key] = job
        self._on_change(job)
