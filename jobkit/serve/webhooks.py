"""The webhooks' outbox sender: claims due deliveries under a lease, POSTs them signed (Standard Webhooks), and
records each attempt; failures are retried on RETRY_SCHEDULE (about 27 hours in all), then the delivery is dead.

Run it with `jobkit webhooks run`, or from Python: `await WebhookSender(backend).run()`. Several senders may run at
once: a lease keeps each delivery with one of them at a time (at least once; receivers dedupe on `webhook-id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..backends import Backend
from ..config import BackendLike, get_backend
from ..deliveries import DeliveryAttempt, WebhookDelivery
from ..errors import ConfigError
from ._signing import headers, load_secret
from ._targets import Refused, TargetGuard

__all__ = ["RETRY_SCHEDULE", "WebhookSender", "http_client"]

log = logging.getLogger("jobkit.webhooks")

# Seconds before each retry, after the first attempt fails (the schedule Standard Webhooks suggests): 8 attempts
# over 27 h 35 min, each delay stretched or shrunk by up to `jitter` so that retries of many deliveries spread out.
RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
LEASE_MARGIN = 30.0  # seconds a lease outlasts the longest attempt (twice the timeout)
ANSWER_KEPT = 200  # bytes of a failed answer's body kept in its attempt


def http_client(timeout: float) -> Any:
    """An async HTTP client (httpx2 where it installs, else httpx) that follows no redirect and ignores proxy
    settings (the address checked is the address called)."""
    try:
        import httpx2 as httpx
    except ImportError:
        try:
            import httpx  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError("sending webhooks needs an HTTP client: pip install 'jobkit[serve]'") from None
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)


class WebhookSender:
    """Sends the webhook deliveries of `queues` (default: every queue whose outbox holds pending deliveries).

    Each attempt takes at most `timeout` seconds to resolve the host and `timeout` more for the POST and its
    answer, within the lease (twice the timeout + LEASE_MARGIN) it holds the delivery under."""

    def __init__(
        self, backend: BackendLike = None, *, secret: str | None = None, queues: Sequence[str] | None = None,
        allow: Iterable[str] | None = None, schedule: Sequence[float] = RETRY_SCHEDULE, jitter: float = 0.1,
        timeout: float = 10.0, batch: int = 20, poll: float = 1.0,
    ) -> None:
        self._key = load_secret(secret)
        if not all(d >= 0 for d in schedule) or not 0 <= jitter < 1 or timeout <= 0 or batch < 1 or poll <= 0:
            raise ConfigError("schedule delays >= 0, 0 <= jitter < 1, timeout > 0, batch >= 1 and poll > 0")
        self._backend_arg, self._backend = backend, backend if isinstance(backend, Backend) else None
        self.queues = list(queues) if queues is not None else None
        self.guard = TargetGuard(allow)
        self.schedule, self.jitter, self.timeout, self.batch, self.poll = tuple(schedule), jitter, timeout, batch, poll
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = asyncio.Event()
        self._client: Any = None

    async def backend(self) -> Backend:
        if self._backend is None:
            self._backend = await get_backend(self._backend_arg)
        return self._backend

    def next_at(self, attempts: int, now: float) -> float | None:
        """When to try again after `attempts` failed attempts, or None when the schedule is spent."""
        if attempts > len(self.schedule):
            return None
        delay = self.schedule[attempts - 1]
        return now + delay * (1 + random.uniform(-self.jitter, self.jitter))

    async def send_due(self) -> int:
        """One pass: claim and send the due deliveries of every queue (up to `batch` per queue at once). Returns how
        many were attempted."""
        backend = await self.backend()
        if self._client is None:
            self._client = http_client(self.timeout)
        sent = 0
        for queue in self.queues if self.queues is not None else await backend.webhook_queues():
            lease = 2 * self.timeout + LEASE_MARGIN
            due = await backend.claim_webhooks(queue, self.id, limit=self.batch, lease=lease, now=time.time())
            await asyncio.gather(*(self._send(backend, d) for d in due))
            sent += len(due)
        return sent

    async def _send(self, backend: Backend, d: WebhookDelivery) -> None:
        attempt, retry = await self._post(d)
        next_at = None if attempt.ok or not retry else self.next_at(d.attempts + 1, time.time())
        if not await backend.settle_webhook(d.queue, self.id, d.id, attempt, next_at, time.time()):
            log.warning("webhook delivery %s of %s: its lease ran out before the answer came; another sender has it",
                        d.id, d.queue)
        elif not attempt.ok:
            then = "dead: replay it once fixed" if next_at is None else f"next try in {next_at - time.time():.0f}s"
            log.warning("webhook delivery %s of job %s to %s failed (%s); %s", d.id, d.job_id, d.url, attempt.error,
                        then)

    async def _post(self, d: WebhookDelivery) -> tuple[DeliveryAttempt, bool]:
        """One POST: the attempt, and whether a failure is worth retrying."""
        started = time.time()

        def attempt(ok: bool, code: int | None = None, error: str | None = None) -> DeliveryAttempt:
            return DeliveryAttempt(at=started, ok=ok, code=code, error=error, seconds=round(time.time() - started, 4))

        try:
            target = await asyncio.wait_for(self.guard.check(d.url), self.timeout)
        except Refused as exc:
            return attempt(False, error=f"refused: {exc}"), False
        except (OSError, asyncio.TimeoutError) as exc:
            return attempt(False, error=f"the host did not resolve: {exc or 'timed out'}"), True
        body = d.body()
        sent = headers(self._key, d.message_id, int(started), body)
        sent["host"] = target.host if target.port is None else f"{target.host}:{target.port}"
        sent["user-agent"] = "jobkit-webhooks"
        try:
            code, said = await asyncio.wait_for(self._answer(target.url, body, sent, target.host), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any transport failure is one failed attempt, retried
            why = str(exc) or f"no answer within {self.timeout:g}s"
            return attempt(False, error=f"{type(exc).__name__}: {why}"[:500]), True
        if 200 <= code < 300:
            return attempt(True, code), False
        if 300 <= code < 400:
            return attempt(False, code, "a redirect, not followed: point the webhook at the final URL"), True
        return attempt(False, code, f"HTTP {code}: {said}"), True

    async def _answer(self, url: str, body: bytes, sent: dict[str, str], host: str) -> tuple[int, str]:
        """POST; the status code, and the first ANSWER_KEPT bytes of a failure's body (a receiver's answer is not
        read whole: it may be any size)."""
        async with self._client.stream("POST", url, content=body, headers=sent,
                                       extensions={"sni_hostname": host}) as res:
            said = b""
            if not 200 <= res.status_code < 300:
                async for chunk in res.aiter_bytes():
                    said += chunk
                    if len(said) >= ANSWER_KEPT:
                        break
            return int(res.status_code), said[:ANSWER_KEPT].decode(errors="replace")

    async def run(self) -> None:
        """Send until `stop()`: a pass, then (when it found nothing) a pause of `poll` seconds."""
        self._stop.clear()
        try:
            while not self._stop.is_set():
                if not await self.send_due():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.poll)
        finally:
            await self.aclose()

    def stop(self) -> None:
        """Let `run()` return after the pass under way."""
        self._stop.set()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
