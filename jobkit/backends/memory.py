"""`memory://`: jobs in this process's memory, for tests and throwaway runs."""

from __future__ import annotations

import builtins
import heapq
import itertools
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import limiter
from ..models import (
    TERMINAL_STATES,
    Job,
    JobEvent,
    JobState,
    Outcome,
    Progress,
    QueueCounts,
    RateLimit,
    WorkerInfo,
)
from . import _transitions as transitions
from ._local import EventHub, Subscription
from .base import Backend, ClaimResult

__all__ = ["MemoryBackend"]



@dataclass
class _Queue:
    jobs: dict[str, Job] = field(default_factory=dict)
    ready: list[tuple[int, int, str]] = field(default_factory=list)  # heap of (priority, seq, id)
    delayed: list[tuple[float, int, str]] = field(default_factory=list)  # heap of (run_at, seq, id)
    paused: bool = False
    window: tuple[float, int] = (0.0, 0)


def _copy(job: Job) -> Job:
    """A copy that shares nothing mutable of ours but the payload (model_copy is 5x slower on the hot path)."""
    clone = Job.__new__(Job)
    state = dict(job.__dict__)
    state["history"] = list(job.history)
    object.__setattr__(clone, "__dict__", state)
    object.__setattr__(clone, "__pydantic_fields_set__", set(job.__pydantic_fields_set__))
    object.__setattr__(clone, "__pydantic_extra__", None)
    object.__setattr__(clone, "__pydantic_private__", None)
    return clone


class MemoryBackend(Backend):
    """Every transition is one synchronous critical section on the event loop (no awaits inside)."""

    is_local = True

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._queues: dict[str, _Queue] = {}
        self._seq = itertools.count(1)
        self._event_seq = itertools.count(1)
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._hub = EventHub()

    def _q(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    def _event(self, job: Job, event: str, **extra: Any) -> JobEvent:
        return self._numbered([transitions.event(job, event, **extra)])[0]

    def _numbered(self, events: builtins.list[JobEvent]) -> builtins.list[JobEvent]:
        for ev in events:
            ev.id = str(next(self._event_seq))
        return events

    def _enqueue(self, q: _Queue, job: Job, now: float) -> None:
        if job.run_at > now:
            job.state = JobState.DELAYED
            heapq.heappush(q.delayed, (job.run_at, job.seq, job.id))
        else:
            job.state = JobState.WAITING
            heapq.heappush(q.ready, (job.priority, job.seq, job.id))

    async def open(self) -> None:
        self._hub.closed = False

    async def close(self) -> None:
        self._hub.close()

    async def add(self, jobs: Sequence[Job]) -> builtins.list[Job]:
        out, events, touched = [], [], set()
        for job in jobs:
            q = self._q(job.queue)
            stored = q.jobs.get(job.id)
            if stored is None:
                stored = _copy(job)
                stored.seq = next(self._seq)
                self._enqueue(q, stored, stored.created_at)
                stored.note(stored.state, stored.created_at, "added")
                q.jobs[stored.id] = stored
                events.append(self._event(stored, "added"))
                touched.add(job.queue)
            out.append(_copy(stored))
        self._hub.publish(events)
        for name in touched:
            self._hub.poke(name)
        return out

    async def get(self, queue: str, job_id: str) -> Job | None:
        job = self._q(queue).jobs.get(job_id)
        return None if job is None else _copy(job)

    async def list(
        self,
        queue: str,
        *,
        states: Collection[JobState] | None = None,
        name: str | None = None,
        owner: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> builtins.list[Job]:
        found = [
            j for j in self._q(queue).jobs.values()
            if (states is None or j.state in states) and (name is None or j.name == name)
            and (owner is None or j.owner == owner)
        ]
        found.sort(key=lambda j: (j.created_at, j.seq), reverse=True)
        return [_copy(j) for j in found[offset : offset + limit]]

    async def counts(self, queue: str) -> QueueCounts:
        q = self._q(queue)
        tally: dict[str, int] = {}
        for j in q.jobs.values():
            tally[j.state.value] = tally.get(j.state.value, 0) + 1
        return QueueCounts(**tally, paused=q.paused)

    async def queues(self) -> builtins.list[str]:
        return sorted(n for n, q in self._queues.items() if q.jobs or q.paused)

    async def cancel(self, queue: str, job_id: str, now: float) -> Job | None:
        job = self._q(queue).jobs.get(job_id)
        if job is None:
            return None
        self._hub.publish(self._numbered(transitions.cancel(job, now)))
        return _copy(job)

    async def set_paused(self, queue: str, paused: bool) -> None:
        self._q(queue).paused = paused
        if not paused:
            self._hub.poke(queue)

    async def retry(self, queue: str, job_ids: Sequence[str] | None, now: float, limit: int = 1000) -> int:
        q = self._q(queue)
        if job_ids is None:
            chosen = [j for j in q.jobs.values() if j.state is JobState.FAILED][:limit]
        else:
            chosen = [j for i in job_ids if (j := q.jobs.get(i)) and j.state in (JobState.FAILED, JobState.CANCELLED)]
        events = []
        for job in chosen:
            events.extend(self._numbered(transitions.reset(job, now)))
            self._enqueue(q, job, now)
        self._hub.publish(events)
        if chosen:
            self._hub.poke(queue)
        return len(chosen)

    async def clean(
        self,
        queue: str,
        state: JobState,
        *,
        finished_before: float | None = None,
        keep_last: int | None = None,
        expired_at: float | None = None,
        limit: int = 1000,
    ) -> int:
        q = self._q(queue)
        if state not in TERMINAL_STATES:
            return 0
        done = sorted(
            (j for j in q.jobs.values() if j.state is state), key=lambda j: (j.finished_at or 0, j.seq), reverse=True
        )
        doomed = []
        for rank, job in enumerate(done):
            fin = job.finished_at or 0
            if (
                (finished_before is not None and fin < finished_before)
                or (keep_last is not None and rank >= keep_last)
                or (expired_at is not None and job.expires_at is not None and job.expires_at < expired_at)
            ):
                doomed.append(job)
        doomed = doomed[len(doomed) - limit:] if limit < len(doomed) else doomed  # the oldest go first
        for job in doomed:
            del q.jobs[job.id]
        self._hub.publish(self._event(j, "removed") for j in doomed)
        return len(doomed)

    async def claim(
        self,
        queue: str,
        owner: str,
        *,
        limit: int,
        lease: float,
        now: float,
        names: Collection[str] | None = None,
        rate_limit: RateLimit | None = None,
    ) -> ClaimResult:
        q = self._q(queue)
        while q.delayed and q.delayed[0][0] <= now:
            _, _, jid = heapq.heappop(q.delayed)
            job = q.jobs.get(jid)
            if job is not None and job.state is JobState.DELAYED and job.run_at <= now:
                job.state = JobState.WAITING
                heapq.heappush(q.ready, (job.priority, job.seq, job.id))
        next_due = self._next_due(q, now)
        if q.paused or limit <= 0:
            return ClaimResult([], None)
        if rate_limit is not None:
            start, used = q.window
            start, used, limit, retry_in = limiter.grant(rate_limit, start, used, limit, now)
            if not limit:
                return ClaimResult([], retry_in)
        claimed: list[Job] = []
        skipped: list[tuple[int, int, str]] = []
        while q.ready and len(claimed) < limit:
            entry = heapq.heappop(q.ready)
            job = q.jobs.get(entry[2])
            if job is None or job.state is not JobState.WAITING or entry[1] != job.seq:
                continue
            if names is not None and job.name not in names:
                skipped.append(entry)
                continue
            job.state, job.owner, job.lease_until = JobState.ACTIVE, owner, now + lease
            job.attempts += 1
            job.started_at, job.cancel_requested = now, False
            job.note(job.state, now)
            claimed.append(job)
        for entry in skipped:
            heapq.heappush(q.ready, entry)
        if rate_limit is not None:
            q.window = (start, used - (limit - len(claimed)))
        self._hub.publish(self._event(j, "active") for j in claimed)
        return ClaimResult([_copy(j) for j in claimed], None if claimed else next_due)

    @staticmethod
    def _next_due(q: _Queue, now: float) -> float | None:
        while q.delayed:
            run_at, _, jid = q.delayed[0]
            job = q.jobs.get(jid)
            if job is not None and job.state is JobState.DELAYED and job.run_at == run_at:
                return max(0.0, run_at - now)
            heapq.heappop(q.delayed)
        return None

    def _held(self, queue: str, owner: str, job_id: str) -> Job | None:
        job = self._q(queue).jobs.get(job_id)
        if job is None or job.state is not JobState.ACTIVE or job.owner != owner:
            return None
        return job

    async def renew(self, queue: str, owner: str, job_ids: Sequence[str], lease: float, now: float) -> dict[str, bool]:
        out = {}
        for jid in job_ids:
            job = self._held(queue, owner, jid)
            if job is not None:
                job.lease_until = now + lease
                out[jid] = job.cancel_requested
        return out

    async def finish(self, queue: str, owner: str, outcomes: Sequence[Outcome], now: float) -> builtins.list[Job]:
        q = self._q(queue)
        moved, events, poke = [], [], False
        for oc in outcomes:
            job = self._held(queue, owner, oc.job_id)
            if job is None:
                continue
            events.extend(self._numbered(transitions.apply_outcome(job, oc, now)))
            if job.state not in TERMINAL_STATES:
                job.seq = next(self._seq)
                self._enqueue(q, job, now)
                poke = True
            moved.append(_copy(job))
        self._hub.publish(events)
        if poke:
            self._hub.poke(queue)
        return moved

    async def set_progress(self, queue: str, owner: str, job_id: str, progress: Progress) -> bool:
        job = self._held(queue, owner, job_id)
        if job is None:
            return False
        job.progress = progress
        self._hub.publish([self._event(job, "progress", progress=progress)])
        return True

    async def set_checkpoint(self, queue: str, owner: str, job_id: str, checkpoint: Any) -> bool:
        job = self._held(queue, owner, job_id)
        if job is None:
            return False
        job.checkpoint = checkpoint
        return True

    async def recover(self, queue: str, now: float) -> builtins.list[Job]:
        q = self._q(queue)
        moved, events = [], []
        for job in list(q.jobs.values()):
            if job.state is not JobState.ACTIVE or (job.lease_until or 0) >= now:
                continue
            events.extend(self._numbered(transitions.stall(job, now)))
            if not job.finished:  # back to waiting
                job.seq = next(self._seq)
                self._enqueue(q, job, now)
            moved.append(_copy(job))
        self._hub.publish(events)
        if moved:
            self._hub.poke(queue)
        return moved

    async def wait_for_work(self, queue: str, timeout: float) -> None:
        await self._hub.wait(queue, timeout)

    async def subscribe(self, queue: str, *, since: str | None = None) -> AsyncIterator[JobEvent]:
        sub = self._hub.subscribe(queue)  # live first: nothing published from here on is missed
        if since is None:
            return Subscription(self._hub, queue, [], 0, sub=sub)
        after = int(since) if since.isdigit() else 0
        backlog = [e for e in self._hub.recent(queue) if int(e.id) > after]
        return Subscription(self._hub, queue, backlog, after, sub=sub)

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        self._workers[info.id] = (info, info.seen_at + ttl)

    async def forget_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def workers(self, now: float, queue: str | None = None) -> builtins.list[WorkerInfo]:
        return [
            info for info, until in self._workers.values()
            if until >= now and (queue is None or queue in info.queues)
        ]
