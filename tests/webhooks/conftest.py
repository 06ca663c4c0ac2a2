"""Fixtures of the webhook tests: a secret, a receiver on loopback, and a way to end jobs with a webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import pytest

from jobkit.backends import Backend
from jobkit.models import JobOptions, JobState, Outcome, new_job
from jobkit.serve import WebhookSender
from tests.webhooks.receiver import Received, Receiver

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def verify(got: Received, secret: str = SECRET) -> None:
    """The Standard Webhooks check a receiver makes, written here from the spec (not with jobkit's code)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = dict(s.split(",", 1) for s in got.headers["webhook-signature"].split(" "))
    assert hmac.compare_digest(versions["v1"], expected), "bad signature"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 300


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


async def end_jobs(backend: Backend, queue: str, url: str, n: int = 1, state: JobState = JobState.COMPLETED) -> None:
    """Add `n` jobs with webhook `url` and end them (completed with result {"i": i}, or failed)."""
    now = time.time()
    await backend.add([new_job(f"j{i}", "work", queue, {"i": i}, JobOptions(webhook=url), now, now) for i in range(n)])
    claimed = await backend.claim(queue, "w", limit=n, lease=30, now=now)
    assert len(claimed.jobs) == n
    await backend.finish(queue, "w", [
        Outcome(job_id=f"j{i}", state=state, result={"i": i}) if state is JobState.COMPLETED
        else Outcome(job_id=f"j{i}", state=state, error="boom") for i in range(n)], now)


async def send_once(backend: Backend, allow: list[str] | None = None, **kw: object) -> int:
    """One pass of a fresh sender (loopback allowed unless `allow` says otherwise); how many it attempted."""
    sender = WebhookSender(backend, secret=SECRET, allow=["127.0.0.1"] if allow is None else allow,
                           **kw)  # type: ignore[arg-type]
    try:
        return await sender.send_due()
    finally:
        await sender.aclose()
