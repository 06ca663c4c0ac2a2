"""The outbox sender against a real HTTP receiver on loopback, on every backend: signed POSTs, retries with backoff,
leases between senders, no redirects followed, and dead deliveries replayed."""

from __future__ import annotations

import asyncio
import json
import time

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState
from jobkit.serve import RETRY_SCHEDULE, WebhookSender
from tests.webhooks.conftest import SECRET, end_jobs, send_once, verify
from tests.webhooks.receiver import Receiver

LOOPBACK = ["127.0.0.1"]


def sender(backend: Backend, **kw: object) -> WebhookSender:
    return WebhookSender(backend, secret=SECRET, allow=LOOPBACK, **kw)  # type: ignore[arg-type]


@jobkit.task(name="webhooks.hooked_sum", webhook="https://hooks.example.com/sums")
async def hooked_sum(ctx: jobkit.Context, payload: dict[str, int]) -> int:
    return payload["a"] + payload["b"]


def test_a_task_webhook_is_each_job_s_default() -> None:
    assert hooked_sum.options.webhook == "https://hooks.example.com/sums"


async def test_a_worker_completing_a_job_posts_a_signed_body(backend: Backend, qname: str,
                                                             receiver: Receiver) -> None:
    job = await jobkit.Queue(qname, backend=backend).add(hooked_sum, {"a": 2, "b": 3}, webhook=receiver.url)
    assert job.options.webhook == receiver.url  # the call's webhook over the task's
    async with jobkit.Worker([hooked_sum], backend=backend, queues=[qname], handle_signals=False):
        assert await jobkit.JobHandle(job, backend, hooked_sum).result(timeout=20) == 5
    assert await send_once(backend) == 1
    [got] = receiver.wait_for(1)
    verify(got)
    body = json.loads(got.body)
    assert body["type"] == "job.completed" and body["data"]["result"] == 5 and body["data"]["id"] == job.id
    assert body["data"]["queue"] == qname and body["data"]["task"] == "webhooks.hooked_sum"
    assert body["data"]["state"] == "completed" and body["data"]["finished_at"] >= body["data"]["started_at"]
    [d] = await backend.webhook_deliveries(qname)
    assert d.state == "delivered" and got.headers["webhook-id"] == d.message_id and d.history[0].code == 200


async def test_500_then_200_is_retried_and_delivered_once(backend: Backend, qname: str, receiver: Receiver) -> None:
    receiver.answers = [500]
    await end_jobs(backend, qname, receiver.url)
    s = sender(backend, schedule=(0.2,), jitter=0.0, poll=0.05)
    running = asyncio.ensure_future(s.run())
    try:
        got = await asyncio.to_thread(receiver.wait_for, 2)
    finally:
        s.stop()
        await asyncio.wait_for(running, 20)
    assert len(got) == 2 and got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    assert got[0].body == got[1].body and got[1].at - got[0].at >= 0.2  # the backoff was kept
    for g in got:
        verify(g)
    [d] = await backend.webhook_deliveries(qname)
    assert d.state == "delivered" and d.attempts == 2 and [h.code for h in d.history] == [500, 200]
    assert d.history[0].error == "HTTP 500: no" and d.history[1].error is None
    assert await send_once(backend) == 0  # delivered once: nothing left to send
    assert len(receiver.got) == 2


async def test_receiver_down_then_up_is_delivered_after_backoff(backend: Backend, qname: str) -> None:
    down = Receiver().start()
    port = down.port
    down.stop()  # the port is closed: connections are refused
    await end_jobs(backend, qname, f"http://127.0.0.1:{port}/hook", state=JobState.FAILED)
    s = sender(backend, schedule=(0.3,), jitter=0.0)
    try:
        assert await s.send_due() == 1
        [d] = await backend.webhook_deliveries(qname)
        assert d.state == "pending" and d.attempts == 1 and d.history[0].code is None and d.history[0].error
        assert d.next_at is not None and d.next_at - d.history[0].at >= 0.3
        assert await s.send_due() == 0  # not due before its backoff
        up = Receiver(port=port).start()
        try:
            await asyncio.sleep(max(0.0, d.next_at - time.time()))  # the backoff itself, not a synchronisation
            assert await s.send_due() == 1
            [got] = up.wait_for(1)
        finally:
            up.stop()
    finally:
        await s.aclose()
    verify(got)
    assert json.loads(got.body)["data"]["error"] == "boom"
    [d] = await backend.webhook_deliveries(qname)
    assert d.state == "delivered" and d.attempts == 2


async def test_two_senders_never_send_one_delivery_at_once(backend: Backend, qname: str) -> None:
    slow = Receiver(delay=0.2).start()
    try:
        await end_jobs(backend, qname, slow.url, n=12)
        a, b = sender(backend, batch=4), sender(backend, batch=4)
        try:
            counts = await asyncio.gather(*(s.send_due() for s in (a, b, a, b, a, b)))
        finally:
            await a.aclose()
            await b.aclose()
        got = slow.wait_for(12)
    finally:
        slow.stop()
    assert sum(counts) == 12
    ids = [g.headers["webhook-id"] for g in got]
    assert len(ids) == len(set(ids)) == 12  # each delivery POSTed once
    assert all(d.state == "delivered" for d in await backend.webhook_deliveries(qname))


async def test_redirects_are_not_followed(backend: Backend, qname: str, receiver: Receiver) -> None:
    receiver.answers = [302]
    await end_jobs(backend, qname, receiver.url)
    assert await send_once(backend) == 1
    [d] = await backend.webhook_deliveries(qname)
    assert d.state == "pending" and d.history[0].code == 302 and "redirect" in (d.history[0].error or "")
    assert len(receiver.got) == 1  # /elsewhere was never called


async def test_a_refused_target_is_dead_at_once_and_replay_sends_it_again(backend: Backend, qname: str,
                                                                        receiver: Receiver) -> None:
    await end_jobs(backend, qname, receiver.url)
    assert await send_once(backend, allow=[]) == 1  # loopback not allowed
    [d] = await backend.webhook_deliveries(qname)
    assert d.state == "dead" and "loopback" in (d.history[0].error or "") and not receiver.got
    replayed = await jobkit.Queue(qname, backend=backend).replay_webhook(d.id)
    assert replayed.state == "pending"
    assert await send_once(backend) == 1
    [got] = receiver.wait_for(1)
    assert got.headers["webhook-id"] == d.message_id
    [d] = await backend.webhook_deliveries(qname)
    assert d.state == "delivered" and len(d.history) == 2


def test_the_default_schedule_spans_about_27_hours() -> None:
    s = WebhookSender("memory://", secret=SECRET, jitter=0.0)
    waits = [s.next_at(n, 0.0) for n in range(1, 9)]
    assert waits[-1] is None  # 8 attempts, then dead
    assert sum(w for w in waits if w is not None) == sum(RETRY_SCHEDULE) == 99_305.0  # 27 h 35 min 5 s
    jittered = WebhookSender("memory://", secret=SECRET, jitter=0.1)
    assert all(4.5 <= (jittered.next_at(1, 0.0) or 0) <= 5.5 for _ in range(50))


async def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(backend: Backend, qname: str) -> None:
    slow = Receiver(delay=2.0).start()
    try:
        await end_jobs(backend, qname, slow.url)
        started = time.monotonic()
        assert await send_once(backend, timeout=0.3) == 1
        assert time.monotonic() - started < 1.8  # the POST was given up, not waited for
    finally:
        slow.stop()
    [d] = await backend.webhook_deliveries(qname)
    assert d.state == "pending" and d.history[0].code is None and "within 0.3s" in (d.history[0].error or "")
