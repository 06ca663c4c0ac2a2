"""`memory://`: jobs in this process's memory, for tests and throwaway runs."""

from __future__ import annotations

import bisect
import builtins
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import limiter
from ..deliveries import DELIVERIES_KEPT, DeliveryAttempt, DeliveryState, WebhookDelivery
from ..models import (
    TERMINAL_STATES,
    HistoryEntry,
    Job,
    JobEvent,
    JobState,
    Outcome,
    Progress,
    QueueCounts,
    RateLimit,
    WorkerInfo,
    trusted,
)
from . import _flows as flows
from . import _metrics
from . import _outbox as outbox
from . import _transitions as transitions
from ._local import EventHub, Row, Subscription
from ._windows import over_by, wait_until_fits
from .base import (
    CONCURRENCY_RECHECK,
    Ask,
    Backend,
    ChildLink,
    ClaimResult,
    FlowSpec,
    Offer,
    Record,
    Spend,
    check_asks,
    check_record_add,
)

__all__ = ["MemoryBackend"]

ENTRIES_KEPT = 1024  # history models, and notes, kept for sharing, per queue
# A stored job whose progress was never set holds these two instead of a Progress and a history list of its own:
# four objects fewer per job for the cyclic GC to walk (a full collection over 20,000 stored jobs costs about 60 ms).
# Neither leaves the store: a copy gets a Progress and a history of its own.
_NO_PROGRESS = Progress()
_NO_HISTORY: list[HistoryEntry] = []  # never appended to: the store keeps histories in `notes`


@dataclass
class _Queue:
    jobs: dict[str, Job] = field(default_factory=dict)  # their `history` stays empty: see `notes`
    notes: dict[str, list[transitions.Note]] = field(default_factory=dict)  # each job's history, as tuples
    # History models made for copies, by note, shared by every copy with that note: the jobs of one bulk
    # add, claim or finish have equal notes, so most copies make none. Like a copy's payload, they are
    # never changed in place.
    entries: dict[transitions.Note, HistoryEntry] = field(default_factory=dict)
    shared: dict[transitions.Note, transitions.Note] = field(default_factory=dict)  # see `noted`
    ready: list[tuple[int, int, str]] = field(default_factory=list)  # heap of (priority, seq, id)
    delayed: list[tuple[float, int, str]] = field(default_factory=list)  # heap of (run_at, seq, id)
    # Ids of completed and of failed jobs no parent holds, oldest finished first: retention by count.
    done: dict[JobState, dict[str, None]] = field(
        default_factory=lambda: {JobState.COMPLETED: {}, JobState.FAILED: {}})
    held: set[str] = field(default_factory=set)  # ids of jobs a waiting parent holds back from retention
    paused: bool = False
    window: tuple[float, int] = (0.0, 0)
    concurrency: int | None = None  # the queue's global concurrency
    # While `concurrency` is set: ids claimed since last counted, a superset of the ACTIVE jobs' ids.
    claimed: set[str] = field(default_factory=set)

    def promote(self, now: float) -> None:
        """Delayed jobs that are due become waiting."""
        while self.delayed and self.delayed[0][0] <= now:
            _, _, jid = heapq.heappop(self.delayed)
            job = self.jobs.get(jid)
            if job is not None and job.state is JobState.DELAYED and job.run_at <= now:
                job.state = JobState.WAITING
                heapq.heappush(self.ready, (job.priority, job.seq, job.id))

    def active(self) -> int:
        """How many jobs are ACTIVE (those claimed that have not moved on since)."""
        jobs = self.jobs
        self.claimed = {jid for jid in self.claimed if (j := jobs.get(jid)) is not None and j.state is JobState.ACTIVE}
        return len(self.claimed)

    def copy(self, job: Job) -> Job:
        """A copy of a stored job, with its history."""
        entries = self.entries
        history = []
        for n in self.notes[job.id]:
            made = entries.get(n)
            if made is None:
                if len(entries) >= ENTRIES_KEPT:
                    entries.clear()
                made = entries[n] = transitions.entry(n)
            history.append(made)
        clone = transitions.copy(job, history)
        if job.progress is _NO_PROGRESS:
            clone.__dict__["progress"] = trusted(Progress, {"percent": 0.0, "message": "", "extra": {}}, set())
        return clone

    def noted(self, job: Job) -> None:
        """Share the job's newest note with the equal notes of the other jobs of its add, claim or finish.

        Then a job moved adds no object for the cyclic GC to count: a drain of many jobs sets off hardly
        any collection, and so no full one over every stored job (that one costs about 20% of a drain).
        """
        notes = self.notes[job.id]
        note = notes[-1]
        shared = self.shared.get(note)
        if shared is None:
            if len(self.shared) >= ENTRIES_KEPT:
                self.shared.clear()
            self.shared[note] = note
        else:
            notes[-1] = shared

    def store(self, job: Job) -> Job:
        """Keep a copy of a new job, its history as notes."""
        stored = self.jobs[job.id] = transitions.copy(job, _NO_HISTORY)
        progress = job.progress
        if not (progress.__pydantic_fields_set__ or progress.percent or progress.message or progress.extra):
            stored.__dict__["progress"] = _NO_PROGRESS
        self.notes[job.id] = [(h.at, h.state.value, h.attempt, h.worker, h.note) for h in job.history]
        return stored

    def remove(self, job_id: str) -> None:
        del self.jobs[job_id]
        del self.notes[job_id]
        for order in self.done.values():
            order.pop(job_id, None)

    def enter(self, job: Job, was: JobState | None) -> None:
        """Index a job that moved from state `was` (None: new) into its state's heap or retention order."""
        state = job.state
        if state is was:
            return
        if state is JobState.WAITING:
            heapq.heappush(self.ready, (job.priority, job.seq, job.id))
        elif state is JobState.DELAYED:
            heapq.heappush(self.delayed, (job.run_at, job.seq, job.id))
        elif state in self.done and job.id not in self.held:
            self.done[state][job.id] = None
        if was in self.done:
            self.done[was].pop(job.id, None)

    def beyond(self, keep: int, state: JobState = JobState.COMPLETED) -> builtins.list[Job]:
        """The completed (or failed) jobs older than the newest `keep`, oldest first."""
        order = self.done[state]
        over = len(order) - keep
        if over <= 0:
            return []
        return [self.jobs[jid] for jid in itertools.islice(order, over)]


class _Step:
    """One critical section of flow rules over the memory backend (see _flows.FlowStore)."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.b = backend
        self.drafts: list[transitions.Draft] = []
        self.wake: set[str] = set()

    def job(self, key: flows.Key) -> Job | None:
        q = self.b._queues.get(key[0])
        return None if q is None else q.jobs.get(key[1])

    def insert(self, job: Job, now: float) -> Job:
        q = self.b._q(job.queue)
        stored = q.store(job)
        stored.seq = next(self.b._seq)
        q.enter(stored, None)
        transitions.note(stored, q.notes[stored.id], stored.state, stored.created_at, "added")
        q.noted(stored)
        self.drafts.append(transitions.draft(stored, "added", now))
        self.wake.add(job.queue)
        return stored

    def save(self, job: Job, was: JobState, now: float) -> None:
        self.b._q(job.queue).enter(job, was)
        if job.state is JobState.WAITING or job.state is JobState.DELAYED:
            self.wake.add(job.queue)

    def notes(self, job: Job) -> transitions.Notes:
        return self.b._q(job.queue).notes[job.id]

    def emit(self, draft: transitions.Draft) -> None:
        self.drafts.append(draft)

    def links(self, waiter: flows.Key) -> list[flows.Link]:
        return list(self.b._links.get(waiter, {}).values())

    def link(self, waiter: flows.Key, child: flows.Key) -> flows.Link | None:
        return self.b._links.get(waiter, {}).get(child)

    def put(self, links: Sequence[flows.Link]) -> None:
        for link in links:
            self.b._links.setdefault(link.waiter, {})[link.child] = link
            holders = self.b._holders.setdefault(link.child, set())
            if link.held:
                holders.add(link.waiter)
            else:
                holders.discard(link.waiter)

    def clear(self, waiter: flows.Key) -> None:
        for link in self.b._links.pop(waiter, {}).values():
            self.b._holders.get(link.child, set()).discard(waiter)
            self.rehold(link.child)

    def failed(self, job: Job, now: float) -> None:
        self.b._deliver(job, now)

    def rehold(self, child: flows.Key) -> None:
        q = self.b._q(child[0])
        held = bool(self.b._holders.get(child))
        if held == (child[1] in q.held):
            return
        job = q.jobs.get(child[1])
        if held:
            q.held.add(child[1])
            for order in q.done.values():
                order.pop(child[1], None)
        else:
            q.held.discard(child[1])
            self.b._holders.pop(child, None)
            if job is not None and job.state in q.done:
                q.done[job.state][child[1]] = None

    def done(self) -> None:
        """Publish the step's events and wake the queues that got work."""
        if self.drafts:
            self.b._hub.publish(self.b._numbered(self.drafts))
        for name in self.wake:
            self.b._hub.poke(name)


def _capped(caps: Mapping[str, int], taken: dict[str, int], name: str) -> bool:
    """Whether a claim has taken its cap of `name` already; if not, it takes one more."""
    cap = caps.get(name)
    if cap is None:
        return False
    n = taken.get(name, 0)
    if n >= cap:
        return True
    taken[name] = n + 1
    return False


class MemoryBackend(Backend):
    """Every transition is one synchronous critical section on the event loop (no awaits inside)."""

    is_local = True

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._queues: dict[str, _Queue] = {}
        self._seq = itertools.count(1)
        self._event_seq = itertools.count(1)
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._records: dict[tuple[str, str], dict[str, Record]] = {}
        self._windows: dict[tuple[str, str], list[tuple[float, float]]] = {}  # grants (lapses_at, amount), in order
        self._used: dict[tuple[str, str], float] = {}  # the total of each counter's grants
        self._budgets: dict[tuple[str, str], Spend] = {}
        self._metrics: dict[str, dict[int, _metrics.Tally]] = {}  # queue -> minute -> counts
        self._links: dict[flows.Key, dict[flows.Key, flows.Link]] = {}  # parents' ledgers, in order
        self._holders: dict[flows.Key, set[flows.Key]] = {}  # job -> the parents holding it back from retention
        self._outbox: dict[str, dict[str, WebhookDelivery]] = {}  # per queue, by id, oldest first
        self._outbox_seq = itertools.count(1)
        self._hub = EventHub()

    def _q(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    def _numbered(self, drafts: Iterable[transitions.Draft]) -> builtins.list[Row]:
        ids = self._event_seq
        return [(next(ids), *d) for d in drafts]

    def _emit(self, queue: str, drafts: Iterable[transitions.Draft]) -> None:
        """Number and publish events of one queue."""
        self._hub.publish_to(queue, self._numbered(drafts))

    def _enqueue(self, q: _Queue, job: Job, now: float, seq: int | None = None) -> None:
        """Make the job WAITING (DELAYED until its `run_at`), with a new `seq` if given, in its heap."""
        seq = job.seq if seq is None else seq
        if job.run_at > now:
            transitions.assign(job, state=JobState.DELAYED, seq=seq)
            heapq.heappush(q.delayed, (job.run_at, seq, job.id))
        else:
            transitions.assign(job, state=JobState.WAITING, seq=seq)
            heapq.heappush(q.ready, (job.options.priority, seq, job.id))

    async def open(self) -> None:
        self._hub.closed = False

    async def close(self) -> None:
        self._hub.close()

    async def add(self, jobs: Sequence[Job]) -> builtins.list[Job]:
        out, events, touched, now = [], [], set(), time.time()
        for job in jobs:
            q = self._q(job.queue)
            stored = q.jobs.get(job.id)
            if stored is None:
                stored = q.store(job)
                self._enqueue(q, stored, stored.created_at, next(self._seq))
                transitions.note(stored, q.notes[stored.id], stored.state, stored.created_at, "added")
                q.noted(stored)
                events.append(transitions.draft(stored, "added", now))
                touched.add(job.queue)
            out.append(q.copy(stored))
        self._hub.publish(self._numbered(events))
        for name in touched:
            self._hub.poke(name)
        return out

    async def get(self, queue: str, job_id: str) -> Job | None:
        q = self._q(queue)
        job = q.jobs.get(job_id)
        return None if job is None else q.copy(job)

    async def add_flow(self, specs: Sequence[FlowSpec]) -> builtins.list[Job | None]:
        step = _Step(self)
        stored = flows.add(step, specs, time.time())
        step.done()
        return [None if job is None else self._q(job.queue).copy(job) for job in stored]

    async def children(self, queue: str, job_id: str, *, offset: int = 0, limit: int = 100
                       ) -> builtins.list[tuple[ChildLink, Job | None]]:
        lines = sorted(self._links.get((queue, job_id), {}).values(), key=lambda link: link.pos)
        out = []
        for link in lines[max(0, offset):max(0, offset) + max(0, limit)]:
            job = await self.get(*link.child)
            out.append((ChildLink(flows.ref(link.child), link.owned, link.state), job))
        return out

    async def list(
        self,
        queue: str,
        *,
        states: Collection[JobState] | None = None,
        name: str | None = None,
        worker: str | None = None,
        owner: str | None = None,
        tag: tuple[str, str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> builtins.list[Job]:
        q = self._q(queue)
        found = [
            j for j in q.jobs.values()
            if (states is None or j.state in states) and (name is None or j.name == name)
            and (worker is None or j.worker == worker) and (owner is None or j.owner == owner)
            and (tag is None or j.tags.get(tag[0]) == tag[1])
        ]
        found.sort(key=lambda j: (j.created_at, j.seq), reverse=True)
        return [q.copy(j) for j in found[offset : offset + limit]]

    async def counts(self, queue: str) -> QueueCounts:
        q = self._q(queue)
        tally: dict[str, int] = {}
        for j in q.jobs.values():
            tally[j.state.value] = tally.get(j.state.value, 0) + 1
        return QueueCounts(**tally, paused=q.paused)

    async def queues(self) -> builtins.list[str]:
        return sorted(n for n, q in self._queues.items() if q.jobs or q.paused)

    async def cancel(self, queue: str, job_id: str, now: float) -> Job | None:
        q = self._q(queue)
        job = q.jobs.get(job_id)
        if job is None:
            return None
        if job.parent is None and not job.dependents and job.flow is None:
            self._emit(queue, transitions.cancel(job, now, q.notes[job_id]))
        else:
            step = _Step(self)
            flows.cancel(step, job, now)
            step.done()
        return q.copy(job)

    async def set_paused(self, queue: str, paused: bool) -> None:
        self._q(queue).paused = paused
        if not paused:
            self._hub.poke(queue)

    async def set_global_concurrency(self, queue: str, limit: int | None) -> None:
        q = self._q(queue)
        if q.concurrency is None:
            q.claimed = {jid for jid, j in q.jobs.items() if j.state is JobState.ACTIVE}
        q.concurrency = limit
        self._hub.poke(queue)

    async def global_concurrency(self, queue: str) -> int | None:
        return self._q(queue).concurrency

    async def retry(self, queue: str, job_ids: Sequence[str] | None, now: float, limit: int = 1000) -> int:
        q = self._q(queue)
        if job_ids is None:
            chosen = [j for j in q.jobs.values() if j.state is JobState.FAILED][:limit]
        else:
            chosen = [j for i in job_ids if (j := q.jobs.get(i)) and j.state in (JobState.FAILED, JobState.CANCELLED)]
        events = []
        for job in chosen:
            q.done[JobState.FAILED].pop(job.id, None)
            events.extend(transitions.reset(job, now, q.notes[job.id]))
            self._enqueue(q, job, now)
        self._emit(queue, events)
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
            (j for j in q.jobs.values() if j.state is state and j.id not in q.held),
            key=lambda j: (j.finished_at or 0, j.seq), reverse=True,
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
            q.remove(job.id)
            if job.flow is not None:
                self._links.pop((queue, job.id), None)
        now = time.time()
        self._emit(queue, (transitions.draft(j, "removed", now) for j in doomed))
        return len(doomed)

    async def claim(
        self,
        queue: str,
        worker: str,
        *,
        limit: int,
        lease: float,
        now: float,
        names: Collection[str] | None = None,
        rate_limit: RateLimit | None = None,
        caps: Mapping[str, int] | None = None,
    ) -> ClaimResult:
        q = self._q(queue)
        q.promote(now)
        next_due = self._next_due(q, now)
        if q.paused or limit <= 0:
            return ClaimResult([], None)
        if q.concurrency is not None:
            room = q.concurrency - q.active()
            if room <= 0:
                return ClaimResult([], CONCURRENCY_RECHECK, True)
            limit = min(limit, room)
        if rate_limit is not None:
            start, used = q.window
            start, used, limit, retry_in = limiter.grant(rate_limit, start, used, limit, now)
            if not limit:
                return ClaimResult([], retry_in)
        claimed: list[Job] = []
        events: list[transitions.Draft] = []
        skipped: list[tuple[int, int, str]] = []
        taken: dict[str, int] = {}  # jobs claimed per capped name
        ready, jobs, lease_until = q.ready, q.jobs, now + lease
        while ready and len(claimed) < limit:
            entry = heapq.heappop(ready)
            job = jobs.get(entry[2])
            if job is None or job.state is not JobState.WAITING or entry[1] != job.seq:
                continue
            if (names is not None and job.name not in names) or (caps is not None and _capped(caps, taken, job.name)):
                skipped.append(entry)
                continue
            events.append(transitions.claim(job, worker, lease_until, now, q.notes[job.id]))
            q.noted(job)
            if q.concurrency is not None:
                q.claimed.add(job.id)
            claimed.append(q.copy(job))
        for entry in skipped:
            heapq.heappush(ready, entry)
        if rate_limit is not None:
            q.window = (start, used - (limit - len(claimed)))
        self._emit(queue, events)
        dry = len(claimed) < limit  # the ready heap ran out
        return ClaimResult(claimed, next_due if dry or not claimed else None, dry)

    @staticmethod
    def _next_due(q: _Queue, now: float) -> float | None:
        while q.delayed:
            run_at, _, jid = q.delayed[0]
            job = q.jobs.get(jid)
            if job is not None and job.state is JobState.DELAYED and job.run_at == run_at:
                return max(0.0, run_at - now)
            heapq.heappop(q.delayed)
        return None

    def _held(self, queue: str, worker: str, job_id: str) -> Job | None:
        job = self._q(queue).jobs.get(job_id)
        if job is None or job.state is not JobState.ACTIVE or job.worker != worker:
            return None
        return job

    async def renew(self, queue: str, worker: str, job_ids: Sequence[str], lease: float, now: float) -> dict[str, bool]:
        out = {}
        for jid in job_ids:
            job = self._held(queue, worker, jid)
            if job is not None:
                job.lease_until = now + lease
                out[jid] = job.cancel_requested
        return out

    async def finish(
        self, queue: str, worker: str, outcomes: Sequence[Outcome], now: float, *, keep_completed: int | None = None,
        keep_failed: int | None = None,
    ) -> builtins.list[Job]:
        return self._finish(queue, worker, outcomes, now, keep_completed, keep_failed, copies=True)

    async def finish_and_claim(
        self, queue: str, worker: str, outcomes: Sequence[Outcome], *, limit: int, lease: float, now: float,
        names: Collection[str] | None = None, rate_limit: RateLimit | None = None, keep_completed: int | None = None,
        caps: Mapping[str, int] | None = None, keep_failed: int | None = None,
    ) -> ClaimResult:
        """One critical section; with it, a worker writes its outcomes with its next claim, and the jobs that
        finished are not copied (nobody reads them): a third less per job than `finish`'s copies cost."""
        if outcomes:
            self._finish(queue, worker, outcomes, now, keep_completed, keep_failed, copies=False)
        return await self.claim(queue, worker, limit=limit, lease=lease, now=now, names=names, rate_limit=rate_limit,
                                caps=caps)

    def _finish(
        self, queue: str, worker: str, outcomes: Sequence[Outcome], now: float, keep_completed: int | None,
        keep_failed: int | None, *, copies: bool,
    ) -> builtins.list[Job]:
        """`finish`; with `copies=False` it returns the stored jobs themselves, for callers that drop them."""
        q = self._q(queue)
        moved, events, poke, linked = [], [], False, []
        tally: _metrics.Tally = {}
        for oc in outcomes:
            job = self._held(queue, worker, oc.job_id)
            if job is None:
                continue
            events.append(transitions.apply_outcome(job, oc, now, q.notes[job.id]))
            q.noted(job)
            self._deliver(job, now)
            if job.state in q.done:
                if job.id not in q.held:
                    q.done[job.state][job.id] = None
            elif job.state not in TERMINAL_STATES:
                self._enqueue(q, job, now, next(self._seq))
                poke = True
            if (job.parent is not None or job.dependents or job.flow is not None) and job.state in TERMINAL_STATES:
                linked.append(job)
            _metrics.count(tally, job, now)
            moved.append(q.copy(job) if copies else job)
        self._count(queue, tally, now)
        if q.concurrency is not None and moved:  # slots freed: a worker held back by it may claim now
            poke = True
        for state, keep in ((JobState.COMPLETED, keep_completed), (JobState.FAILED, keep_failed)):
            if keep is not None:
                for job in q.beyond(keep, state):
                    q.remove(job.id)
                    events.append(transitions.draft(job, "removed", now))
        self._emit(queue, events)
        if poke:
            self._hub.poke(queue)
        if linked:
            self._ended(linked, now)
        return moved

    def _count(self, queue: str, tally: _metrics.Tally, now: float) -> None:
        """Add a finish's counts to the queue's minute; a new minute first drops those past KEPT_MINUTES."""
        if not tally:
            return
        minutes = self._metrics.setdefault(queue, {})
        minute = int(now // 60)
        counts = minutes.get(minute)
        if counts is None:
            for old in [m for m in minutes if m <= minute - _metrics.KEPT_MINUTES]:
                del minutes[old]
            counts = minutes[minute] = {}
        for key, n in tally.items():
            counts[key] = counts.get(key, 0) + n

    async def metrics(self, queue: str, since: float) -> builtins.list[_metrics.MetricRow]:
        first = int(since // 60)
        minutes = self._metrics.get(queue, {})
        return [(m, name, field, n) for m in sorted(minutes) if m >= first
                for (name, field), n in minutes[m].items()]

    def _ended(self, jobs: Iterable[Job], now: float) -> None:
        """Jobs of flows just finished: their parents count them (and a parent releases its children)."""
        step = _Step(self)
        for job in jobs:
            flows.ended(step, job, now)
        step.done()

    async def set_progress(self, queue: str, worker: str, job_id: str, progress: Progress) -> bool:
        job = self._held(queue, worker, job_id)
        if job is None:
            return False
        job.progress = progress
        self._emit(queue, [transitions.draft(job, "progress", time.time(), progress=progress)])
        return True

    async def set_checkpoint(self, queue: str, worker: str, job_id: str, checkpoint: Any) -> bool:
        job = self._held(queue, worker, job_id)
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
            events.extend(transitions.stall(job, now, q.notes[job.id]))
            self._deliver(job, now)
            if not job.finished:  # back to waiting
                self._enqueue(q, job, now, next(self._seq))
            else:
                q.enter(job, JobState.ACTIVE)
            moved.append(q.copy(job))
        tally: _metrics.Tally = {}
        for job in moved:  # those failed past max_stalls
            _metrics.count(tally, job, now)
        self._count(queue, tally, now)
        self._emit(queue, events)
        if moved:
            self._hub.poke(queue)
        self._ended([j for j in moved if j.finished and (j.parent or j.dependents or j.flow)], now)
        return moved

    async def wait_for_work(self, queue: str, timeout: float, offer: Offer | None = None) -> None:
        await self._hub.wait(queue, timeout)

    # -- webhooks' outbox ----------------------------------------------------------------------------
    def _deliver(self, job: Job, now: float) -> None:
        """Write the delivery of a job that just ended, if it has a webhook (in the caller's critical section)."""
        if not outbox.wants_delivery(job):
            return
        record = self._records.get((job.queue, outbox.RECORD_KIND), {}).get(outbox.RECORD_KEY)
        url = job.options.webhook or (record.value if record else None)
        if url:
            d = outbox.entry(job, url, str(next(self._outbox_seq)), now)
            self._outbox.setdefault(job.queue, {})[d.id] = d

    async def webhook_queues(self) -> builtins.list[str]:
        return sorted(q for q, box in self._outbox.items() if any(d.state == "pending" for d in box.values()))

    async def claim_webhooks(self, queue: str, sender: str, *, limit: int, lease: float, now: float
                             ) -> builtins.list[WebhookDelivery]:
        due = [d for d in self._outbox.get(queue, {}).values() if outbox.claimable(d, now)]
        due.sort(key=lambda d: (d.next_at, int(d.id)))
        for d in due[:limit]:
            outbox.claim(d, sender, now + lease)
        return [d.model_copy(deep=True) for d in due[:limit]]

    async def settle_webhook(self, queue: str, sender: str, delivery_id: str, attempt: DeliveryAttempt,
                             next_at: float | None, now: float) -> bool:
        box = self._outbox.get(queue, {})
        d = box.get(delivery_id)
        if d is None or not outbox.settle(d, sender, attempt, next_at):
            return False
        if d.state != "pending":
            box[d.id] = box.pop(d.id)  # newest ended last
            ended = [k for k, v in box.items() if v.state != "pending"]
            for k in ended[: max(0, len(ended) - DELIVERIES_KEPT)]:
                del box[k]
        return True

    async def webhook_deliveries(self, queue: str, *, state: DeliveryState | None = None, job_id: str | None = None,
                                 limit: int = 100) -> builtins.list[WebhookDelivery]:
        found = [d for d in self._outbox.get(queue, {}).values()
                 if (state is None or d.state == state) and (job_id is None or d.job_id == job_id)]
        found.sort(key=lambda d: int(d.id), reverse=True)
        return [d.model_copy(deep=True) for d in found[:limit]]

    async def replay_webhook(self, queue: str, delivery_id: str, now: float) -> WebhookDelivery | None:
        d = self._outbox.get(queue, {}).get(delivery_id)
        if d is None:
            return None
        outbox.replay(d, now)
        return d.model_copy(deep=True)

    async def subscribe(self, queue: str, *, since: str | None = None) -> AsyncIterator[JobEvent]:
        sub = self._hub.subscribe(queue)  # live first: nothing published from here on is missed
        if since is None:
            return Subscription(self._hub, queue, [], 0, sub=sub)
        after = int(since) if since.isdigit() else 0
        backlog = self._hub.recent(queue, after)
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

    # -- records -----------------------------------------------------------------------------------
    async def read_record(self, queue: str, kind: str, key: str) -> Record | None:
        return self._records.get((queue, kind), {}).get(key)

    async def record_queues(self, kind: str) -> builtins.list[str]:
        return sorted(q for (q, k), records in self._records.items() if k == kind and records)

    async def list_records(self, queue: str, kind: str) -> builtins.list[Record]:
        return sorted(self._records.get((queue, kind), {}).values())

    async def write_record(
        self, queue: str, kind: str, key: str, value: str | None, *, version: int | None = None,
        add: Sequence[Job] = (),
    ) -> int | None:
        check_record_add(queue, value, version, add)
        records = self._records.setdefault((queue, kind), {})
        current = records.get(key)
        if version is not None and version != (current.version if current else 0):
            return None
        if value is None:
            records.pop(key, None)
            written = 0
        else:
            written = (current.version if current else 0) + 1
            records[key] = Record(key, value, written)
        if add:  # no await before this: the write and the adds are one critical section
            await self.add(add)
        return written

    # -- counters and budgets ------------------------------------------------------------------------
    def _window(self, queue: str, key: str, now: float) -> tuple[builtins.list[tuple[float, float]], float]:
        """The counter's grants that have not lapsed, and their total."""
        grants = self._windows.setdefault((queue, key), [])
        lapsed = bisect.bisect_right(grants, (now, float("inf")))
        if lapsed:
            del grants[:lapsed]
            self._used[(queue, key)] = sum(a for _, a in grants)  # anew, so no float drift builds up
        return grants, self._used.get((queue, key), 0.0)

    def _grant(self, queue: str, key: str, lapses_at: float, amount: float) -> None:
        bisect.insort(self._windows[(queue, key)], (lapses_at, amount))
        self._used[(queue, key)] = self._used.get((queue, key), 0.0) + amount

    async def take(self, queue: str, asks: Sequence[Ask], now: float) -> float:
        check_asks(asks)
        wait = 0.0
        for ask in asks:
            grants, used = self._window(queue, ask.key, now)
            wait = max(wait, wait_until_fits(grants, used, ask.amount, ask.limit, now))
        if wait > 0:
            return wait
        for ask in asks:
            self._grant(queue, ask.key, now + ask.window, ask.amount)
        return 0.0

    async def restrict(self, queue: str, key: str, remaining: float, limit: float, until: float, now: float) -> None:
        _, used = self._window(queue, key, now)
        extra = over_by(used, remaining, limit)
        if extra > 0 and until > now:
            self._grant(queue, key, until, extra)

    async def reserve(self, queue: str, key: str, amount: float, limit: float | None) -> tuple[bool, Spend]:
        spend = self._budgets.get((queue, key), Spend(0.0, 0.0))
        if limit is not None and spend.spent + spend.reserved + amount > limit:
            return False, spend
        spend = self._budgets[(queue, key)] = Spend(spend.spent, spend.reserved + amount)
        return True, spend

    async def settle(self, queue: str, key: str, reserved: float, actual: float) -> Spend:
        spend = self._budgets.get((queue, key), Spend(0.0, 0.0))
        spend = self._budgets[(queue, key)] = Spend(spend.spent + actual, max(0.0, spend.reserved - reserved))
        return spend

    async def drop_budget(self, queue: str, key: str) -> Spend:
        return self._budgets.pop((queue, key), Spend(0.0, 0.0))
