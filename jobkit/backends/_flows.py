"""Flow transitions of the backends that run a whole change in one step of Python (memory, SQLite).

A parent (or a job with `depends_on`) keeps a ledger: one `Link` per child or dependency, in order, with the
state it last counted for it and whether it holds that job back from retention. Its `flow` counts the links by
state. Everything here runs inside the backend's atomic step (memory: one critical section; SQLite: one
transaction), so a child's end, its parent's count and the parent's next state change together.

Rules (the same on Redis, see redis_lua/_flow.lua):
- A job with links waits in WAITING_CHILDREN until its policy says: fail_fast fails it on the first child that
  failed or was cancelled; continue_partial fails it once more than `max_failed` of them did; otherwise it runs
  (WAITING, or DELAYED until its run_at) when every link has ended.
- A parent that ends (any way) releases its links' holds; failing by its policy also cancels the children that
  have not started, and a cancelled parent cancels every unfinished child (a running one is asked to stop).
- Adding a flow again with the same ids arms again a parent that failed, was cancelled, or completed with a link
  that did not: its failed or cancelled children run again, completed ones are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import JobNotFound
from ..models import TERMINAL_STATES, ContinuePartial, FailFast, FlowStatus, Job, JobRef, JobState, Progress
from . import _transitions as transitions
from .base import FlowSpec

__all__ = ["FlowStore", "Key", "Link", "add", "cancel", "ended", "key_of", "ref", "summary"]

Key = tuple[str, str]  # (queue, job id)

_COUNTED = {JobState.COMPLETED: "completed", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}


@dataclass
class Link:
    """One line of a parent's ledger: a child (owned) or a dependency, the state counted for it (None while it
    has not ended), and whether it holds the child back from retention."""

    waiter: Key
    child: Key
    pos: int
    owned: bool
    state: JobState | None = None
    held: bool = True


class FlowStore(Protocol):
    """What the flow rules need from a backend, inside its atomic step."""

    def job(self, key: Key) -> Job | None:
        """The stored job itself (changed in place, then `save`d), or None."""

    def insert(self, job: Job, now: float) -> Job:
        """Store a new job in the state it has (event "added"); return the stored job."""

    def save(self, job: Job, was: JobState, now: float) -> None:
        """Store a job changed from state `was` (its indexes follow its state)."""

    def notes(self, job: Job) -> transitions.Notes:
        """Where the job's history goes (see _transitions.note)."""

    def emit(self, draft: transitions.Draft) -> None:
        """Publish an event when the step commits."""

    def links(self, waiter: Key) -> list[Link]:
        """The waiter's ledger, in order."""

    def link(self, waiter: Key, child: Key) -> Link | None:
        """One line of the waiter's ledger."""

    def put(self, links: Sequence[Link]) -> None:
        """Store ledger lines (new or changed)."""

    def clear(self, waiter: Key) -> None:
        """Forget a waiter's ledger (one left by an earlier job of the same id)."""

    def rehold(self, child: Key) -> None:
        """The job's holds changed: it is held back from retention while any link holds it."""

    def failed(self, job: Job, now: float) -> None:
        """The flow failed `job` for good: write its webhook delivery, if it has a webhook (see _outbox.py)."""


def key_of(job: Job | JobRef) -> Key:
    return (job.queue, job.id)


def summary(flow: FlowStatus) -> Progress:
    """A waiting parent's progress: the share of its children ended, and the counts as extra fields."""
    return Progress(percent=flow.percent, message=f"{flow.ended} of {flow.total} children ended", extra={
        "children": {"total": flow.total, "completed": flow.completed, "failed": flow.failed,
                     "cancelled": flow.cancelled}})


# -- adding (and running again) ----------------------------------------------------------------------------------
def add(store: FlowStore, specs: Sequence[FlowSpec], now: float) -> list[Job | None]:
    """Add a flow, or arm it again (see the module's rules); parents come before their children in `specs`.
    Returns the stored jobs in order, None for a child left out because its parent needed nothing."""
    for spec in specs:
        for target, owned in spec.links:
            if not owned and store.job(key_of(target)) is None:
                raise JobNotFound(f"job {spec.job.id} depends on job {target.id}, which is not in queue"
                                  f" {target.queue!r}: add that job first (nothing was queued)")
    armed: set[Key] = set()
    out: list[Job | None] = []
    for spec in specs:
        job = spec.job
        key, parent = key_of(job), job.parent
        if parent is not None and key_of(parent) not in armed:
            out.append(store.job(key))  # its parent stays as it is: so does the child
            continue
        stored = store.job(key)
        if stored is None:
            stored = _insert(store, spec, now)
        elif parent is not None:
            _adopt(store, stored, parent, now, rerun=not spec.links)
        if spec.links and _arm(store, stored, spec, now, new=stored.state is JobState.WAITING_CHILDREN and not
                               store.links(key)):
            armed.add(key)
        out.append(stored)
    for key in armed:
        parent_job = store.job(key)
        if parent_job is not None:
            _seal(store, parent_job, now)
    return out


def _insert(store: FlowStore, spec: FlowSpec, now: float) -> Job:
    job = transitions.copy(spec.job)
    if spec.links:
        job.state = JobState.WAITING_CHILDREN
        policy = job.flow.policy if job.flow is not None else FailFast()
        job.flow = FlowStatus(policy=policy, total=len(spec.links))
        job.progress = summary(job.flow)
    else:
        job.state = JobState.DELAYED if job.run_at > job.created_at else JobState.WAITING
    return store.insert(job, now)


def _adopt(store: FlowStore, child: Job, parent: JobRef, now: float, *, rerun: bool) -> None:
    """An existing job named as a child of an armed parent: run it again if it failed or was cancelled (a parent
    among them is armed by `_arm` instead); one that belongs to no flow or another is waited for as a dependency."""
    if child.parent != parent and parent not in child.dependents:
        child.dependents = (*child.dependents, parent)
        store.save(child, child.state, now)
        link = store.link(key_of(parent), key_of(child))
        if link is not None:
            link.owned = False
            store.put([link])
    if rerun and child.state in (JobState.FAILED, JobState.CANCELLED):
        was = child.state
        drafts = transitions.reset(child, now, store.notes(child))
        store.save(child, was, now)
        for d in drafts:
            store.emit(d)


def _arm(store: FlowStore, job: Job, spec: FlowSpec, now: float, *, new: bool) -> bool:
    """Link a parent to its children and dependencies and make it wait for them, if it is new or must run again.
    Returns whether it was armed."""
    key = key_of(job)
    if new:
        store.clear(key)
    existing = {link.child: link for link in store.links(key)}
    if not new:
        if not existing:
            return False  # a job added some other way under this id: left as it is
        if job.state in (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE):
            return False  # it runs (or is about to): its children have ended, as its policy wanted
        if job.state is JobState.COMPLETED and all(link.state is JobState.COMPLETED for link in existing.values()):
            return False  # it completed after all its children did: nothing to do again
    lines = []
    for pos, (target, owned) in enumerate(spec.links):
        link = existing.get(key_of(target))
        if link is None:
            link = Link(key, key_of(target), pos, owned)
        link.held = True
        lines.append(link)
    store.put(lines)
    me = ref(key)
    for link in lines:
        store.rehold(link.child)
        dep = None if link.owned else store.job(link.child)
        if dep is not None and me not in dep.dependents:
            dep.dependents = (*dep.dependents, me)
            store.save(dep, dep.state, now)
    if job.state is not JobState.WAITING_CHILDREN:
        was = job.state
        policy = spec.job.flow.policy if spec.job.flow is not None else FailFast()
        transitions.assign(job, state=JobState.WAITING_CHILDREN, attempts=0, stalls=0, error=None, traceback=None,
                           finished_at=None, expires_at=None, cancel_requested=False, result=None,
                           flow=FlowStatus(policy=policy, total=len(lines)))
        transitions.note(job, store.notes(job), job.state, now, "run again with its flow")
        store.save(job, was, now)
        store.emit(transitions.draft(job, "waiting-children", now))
    return True


def _seal(store: FlowStore, parent: Job, now: float) -> None:
    """Count the parent's links from their jobs as they now are, and let its policy decide."""
    flow = parent.flow or FlowStatus()
    counts = {"completed": 0, "failed": 0, "cancelled": 0}
    links = store.links(key_of(parent))
    for link in links:
        child = store.job(link.child)
        if child is not None:
            link.state = child.state if child.state in TERMINAL_STATES else None
        if link.state is not None:
            counts[_COUNTED[link.state]] += 1
    store.put(links)
    parent.flow = flow.model_copy(update={"total": len(links), **counts})
    if parent.state is JobState.WAITING_CHILDREN:
        parent.progress = summary(parent.flow)
    store.save(parent, parent.state, now)
    _decide(store, parent, now)


# -- a job ended: count it, and let its parent's policy decide -----------------------------------------------------
def ended(store: FlowStore, job: Job, now: float) -> None:
    """`job` just reached a finished state: its waiters count it; a parent releases its children."""
    if job.parent is not None or job.dependents:
        key = key_of(job)
        for ref in (job.parent, *job.dependents) if job.parent is not None else job.dependents:
            _count(store, key_of(ref), key, job, now)
    if job.flow is not None:
        mode = None if job.state is JobState.COMPLETED else ("all" if job.state is JobState.CANCELLED else "unstarted")
        _release(store, job, mode, now)


def _count(store: FlowStore, waiter_key: Key, key: Key, child: Job, now: float) -> None:
    waiter = store.job(waiter_key)
    link = store.link(waiter_key, key)
    if waiter is None or link is None or link.state is child.state or waiter.flow is None:
        return
    flow = waiter.flow
    change = {}
    if link.state is not None:
        name = _COUNTED[link.state]
        change[name] = getattr(flow, name) - 1
    name = _COUNTED[child.state]
    change[name] = change.get(name, getattr(flow, name)) + 1
    link.state = child.state
    store.put([link])
    waiter.flow = flow.model_copy(update=change)
    if waiter.state is JobState.WAITING_CHILDREN:
        waiter.progress = summary(waiter.flow)
        store.emit(transitions.draft(waiter, "progress", now, progress=waiter.progress))
    store.save(waiter, waiter.state, now)
    _decide(store, waiter, now, blame=child)


def _decide(store: FlowStore, parent: Job, now: float, blame: Job | None = None) -> None:
    """A waiting parent's policy: fail it, run it (its children have all ended), or wait on."""
    flow = parent.flow
    if parent.state is not JobState.WAITING_CHILDREN or flow is None:
        return
    bad = flow.failed + flow.cancelled
    policy = flow.policy
    if bad and isinstance(policy, FailFast):
        _fail(store, parent, _first_failure(store, parent, blame), now)
    elif bad and isinstance(policy, ContinuePartial) and bad > policy.max_failed * flow.total:
        _fail(store, parent, (
            f"{bad} of {flow.total} children failed or were cancelled ({bad / flow.total:.0%}), more than"
            f" max_failed={policy.max_failed:g} allows; first: {_first_failure(store, parent, blame)}"), now)
    elif flow.pending == 0:
        was = parent.state
        transitions.assign(parent, state=JobState.DELAYED if parent.run_at > now else JobState.WAITING)
        transitions.note(parent, store.notes(parent), parent.state, now,
                         f"children ended: {flow.completed} completed, {bad} did not")
        store.save(parent, was, now)
        store.emit(transitions.draft(parent, "waiting", now))


def _first_failure(store: FlowStore, parent: Job, blame: Job | None) -> str:
    if blame is None or blame.state is JobState.COMPLETED:
        for link in store.links(key_of(parent)):
            if link.state in (JobState.FAILED, JobState.CANCELLED):
                blame = store.job(link.child)
                if blame is None:
                    return f"child {link.child[1]} {link.state.value}"
                break
    if blame is None:
        return "a child did not complete"
    line = store.link(key_of(parent), key_of(blame))
    what = "dependency" if line is not None and not line.owned else "child"
    reason = f": {blame.error}" if blame.error and blame.state is JobState.FAILED else ""
    return f"{what} {blame.id} ({blame.name}) {blame.state.value}{reason}"


def _fail(store: FlowStore, parent: Job, error: str, now: float) -> None:
    was = parent.state
    age = parent.options.keep_failed.age
    transitions.assign(parent, state=JobState.FAILED, finished_at=now, error=error, traceback=None,
                       expires_at=None if age is None else now + age)
    transitions.note(parent, store.notes(parent), JobState.FAILED, now, error[:200])
    store.save(parent, was, now)
    store.failed(parent, now)
    store.emit(transitions.draft(parent, "failed", now, error=error))
    ended(store, parent, now)


def _release(store: FlowStore, parent: Job, mode: str | None, now: float) -> None:
    """A parent ended: its links stop holding their jobs; with `mode`, its unfinished children are cancelled
    ("unstarted": those not running; "all": running ones are asked to stop)."""
    links = store.links(key_of(parent))
    changed = [link for link in links if link.held]
    for link in changed:
        link.held = False
    store.put(changed)
    for link in changed:
        store.rehold(link.child)
    if mode is None:
        return
    for link in links:
        child = store.job(link.child) if link.owned and link.state is None else None
        if child is not None and (mode == "all" or child.state is not JobState.ACTIVE):
            cancel(store, child, now)


def cancel(store: FlowStore, job: Job, now: float) -> None:
    """Cancel a job as `Backend.cancel` says (a job waiting for children too), then count its end."""
    was = job.state
    drafts = transitions.cancel(job, now, store.notes(job))
    if not drafts:
        return
    store.save(job, was, now)
    for d in drafts:
        store.emit(d)
    if job.state is JobState.CANCELLED:
        ended(store, job, now)



def ref(key: Key) -> JobRef:
    return JobRef(queue=key[0], id=key[1])
