"""Transitions of one Job model, shared by the backends that hold whole jobs in Python (memory, SQLite).

Each function changes the job as the contract in base.py says and returns the events to publish, built
at the moment of each step. Storing the job, ordering (seq) and wake-ups stay with the backend.
"""

from __future__ import annotations

from typing import Any

from ..models import TERMINAL_STATES, Job, JobEvent, JobState, Outcome

__all__ = ["apply_outcome", "cancel", "event", "reset", "stall"]

_EVENT_OF = {
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.WAITING: "retrying",
    JobState.DELAYED: "retrying",
}


def event(job: Job, name: str, **extra: Any) -> JobEvent:
    """The event `name` for `job` as it is now (the backend sets `id`)."""
    return JobEvent(
        queue=job.queue, job_id=job.id, name=job.name, event=name, state=job.state, attempt=job.attempts, **extra
    )


def _expiry(job: Job, now: float) -> float | None:
    age = job.options.keep_failed.age
    return None if age is None else now + age


def cancel(job: Job, now: float) -> list[JobEvent]:
    """WAITING/DELAYED → CANCELLED; ACTIVE → cancel requested; anything else unchanged (no events)."""
    if job.state in (JobState.WAITING, JobState.DELAYED):
        job.state, job.finished_at = JobState.CANCELLED, now
        job.error = "cancelled before it started"
        job.expires_at = _expiry(job, now)
        job.note(job.state, now, "cancelled")
        return [event(job, "cancelled")]
    if job.state is JobState.ACTIVE and not job.cancel_requested:
        job.cancel_requested = True
        job.note(job.state, now, "cancel requested")
        return [event(job, "cancel-requested")]
    return []


def reset(job: Job, now: float) -> list[JobEvent]:
    """A retry asked for by a person: back to WAITING with fresh attempts."""
    job.attempts = job.stalls = 0
    job.error = job.traceback = None
    job.finished_at = job.expires_at = None
    job.cancel_requested = False
    job.run_at, job.state = now, JobState.WAITING
    job.note(job.state, now, "retried by request")
    return [event(job, "waiting")]


def apply_outcome(job: Job, oc: Outcome, now: float) -> list[JobEvent]:
    """End an attempt: a finished state, or WAITING/DELAYED (by run_at) for a retry; the caller sets seq."""
    job.owner = job.lease_until = None
    job.cancel_requested = False
    if oc.state is JobState.COMPLETED:
        job.result, job.error, job.traceback = oc.result, None, None
    else:
        job.error, job.traceback = oc.error, oc.traceback
    if oc.state in TERMINAL_STATES:
        job.state, job.finished_at, job.expires_at = oc.state, now, oc.expires_at
    else:
        job.run_at = oc.run_at
        job.state = JobState.DELAYED if job.run_at > now else JobState.WAITING
    job.note(job.state, now, "" if oc.state is JobState.COMPLETED else (oc.error or "")[:200])
    return [event(job, _EVENT_OF[oc.state], error=job.error)]


def stall(job: Job, now: float) -> list[JobEvent]:
    """An ACTIVE job whose lease expired: WAITING to run again, or FAILED past max_stalls; the caller sets seq."""
    lost_by = job.owner
    job.stalls += 1
    job.owner = job.lease_until = None
    job.cancel_requested = False
    events = [event(job, "stalled")]
    if job.stalls > job.options.max_stalls:
        job.state, job.finished_at = JobState.FAILED, now
        job.error = (
            f"job stalled {job.stalls} times (its worker stopped renewing the lease, last {lost_by}); "
            f"max_stalls={job.options.max_stalls}"
        )
        job.expires_at = _expiry(job, now)
        events.append(event(job, "failed", error=job.error))
    else:
        job.run_at, job.state = now, JobState.WAITING
        events.append(event(job, "waiting"))
    job.note(job.state, now, f"lease of {lost_by} expired (stall {job.stalls})")
    return events
