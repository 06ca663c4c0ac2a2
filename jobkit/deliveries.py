"""Webhook deliveries as the outbox stores them: what to POST where, and every attempt made (pydantic, JSON only)."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["DeliveryAttempt", "DeliveryState", "WebhookDelivery", "DELIVERIES_KEPT", "ATTEMPTS_KEPT"]

DeliveryState = Literal["pending", "delivered", "dead"]
DELIVERIES_KEPT = 1000  # delivered and dead deliveries kept per queue, newest first; pending ones are never dropped
ATTEMPTS_KEPT = 20  # attempts a delivery remembers, newest last


class DeliveryAttempt(BaseModel):
    """One POST of a delivery: when, the answer's status code (None when none came), and why it failed."""

    at: float
    ok: bool
    code: int | None = None
    error: str | None = None
    seconds: float = 0.0


class WebhookDelivery(BaseModel):
    """One job's completion (or final failure) to POST to `url`, written by the same atomic step that ended the job.

    `job` is the snapshot taken then (id, queue, task, state, result or error, attempts, timestamps), so the body is
    the same on every attempt, even once the job itself is removed. `id` is stable: receivers dedupe on it."""

    id: str
    queue: str
    job_id: str
    url: str
    event: Literal["job.completed", "job.failed"]
    job: dict[str, Any]
    created_at: float
    state: DeliveryState = "pending"
    attempts: int = 0
    next_at: float | None = None  # when it is due (None once delivered or dead)
    lease_until: float | None = None
    sender: str | None = None
    history: list[DeliveryAttempt] = Field(default_factory=list)

    @property
    def message_id(self) -> str:
        """The `webhook-id` header: the same for every attempt and replay of this delivery."""
        return f"{self.queue}:{self.job_id}:{self.id}"

    def body(self) -> bytes:
        """The JSON body POSTed (Standard Webhooks' type / timestamp / data shape), the same bytes on every attempt."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at))
        return json.dumps({"type": self.event, "timestamp": stamp, "data": self.job}, separators=(",", ":"),
                          sort_keys=True).encode()
