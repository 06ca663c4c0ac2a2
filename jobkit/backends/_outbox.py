"""Outbox steps shared by the backends that hold deliveries as Python models (memory, SQLite); redis_lua/_outbox.lua
does the same in Redis. Each runs inside its backend's atomic step: a job's end and its delivery are written together.
"""

from __future__ import annotations

from ..deliveries import ATTEMPTS_KEPT, DeliveryAttempt, WebhookDelivery
from ..models import Job, JobState

__all__ = ["RECORD_KEY", "RECORD_KIND", "claim", "claimable", "entry", "replay", "settle", "snapshot", "wants_delivery"]

RECORD_KIND, RECORD_KEY = "webhook", "url"  # a queue's own webhook is the record (RECORD_KIND, RECORD_KEY)


def wants_delivery(job: Job) -> bool:
    """A job that just ended as a webhook reports: completed, or failed for good (not cancelled, not a retry)."""
    return job.state is JobState.COMPLETED or job.state is JobState.FAILED


def snapshot(job: Job) -> dict[str, object]:
    """What a delivery says about its job, as it ended."""
    out: dict[str, object] = {
        "id": job.id, "queue": job.queue, "task": job.name, "state": job.state.value, "attempts": job.attempts,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
    }
    if job.owner is not None:
        out["owner"] = job.owner
    if job.state is JobState.COMPLETED:
        out["result"] = job.result
    else:
        out["error"] = job.error
    return out


def entry(job: Job, url: str, delivery_id: str, now: float) -> WebhookDelivery:
    """The delivery of `job`, which just ended, due at once."""
    return WebhookDelivery(id=delivery_id, queue=job.queue, job_id=job.id, url=url, job=snapshot(job),
                           event="job.completed" if job.state is JobState.COMPLETED else "job.failed",
                           created_at=now, next_at=now)


def claimable(d: WebhookDelivery, now: float) -> bool:
    """Pending, due, and under no live lease."""
    return (d.state == "pending" and d.next_at is not None and d.next_at <= now
            and (d.lease_until is None or d.lease_until <= now))


def claim(d: WebhookDelivery, sender: str, lease_until: float) -> None:
    d.sender, d.lease_until = sender, lease_until


def settle(d: WebhookDelivery, sender: str, attempt: DeliveryAttempt, next_at: float | None) -> bool:
    """Record an attempt by `sender`, which must still hold the delivery: delivered when it succeeded, else pending
    again at `next_at`, or dead (None: no tries left). False, and nothing changed, when another sender holds it."""
    if d.state != "pending" or d.sender != sender:
        return False
    d.history = [*d.history, attempt][-ATTEMPTS_KEPT:]
    d.attempts += 1
    d.sender = d.lease_until = None
    if attempt.ok:
        d.state, d.next_at = "delivered", None
    elif next_at is None:
        d.state, d.next_at = "dead", None
    else:
        d.next_at = next_at
    return True


def replay(d: WebhookDelivery, now: float) -> None:
    """Send again from the first try of the schedule, under the same id, keeping the attempts made so far."""
    d.state, d.attempts, d.next_at, d.sender, d.lease_until = "pending", 0, now, None, None
