"""Webhooks' outbox on every backend: a job that completes or fails for good gets its delivery in the same step that
ends it; leases keep two senders apart; attempts are recorded; a delivery can be replayed under the same id."""

from __future__ import annotations

import asyncio
import time

import jobkit
from jobkit.backends import Backend
from jobkit.deliveries import DeliveryAttempt
from jobkit.models import Job, JobOptions, JobState, Outcome, new_job

HOOK = "https://hooks.example.com/jobs"


def _job(qname: str, job_id: str, webhook: str | None = HOOK, owner: str | None = None, **options: object) -> Job:
    now = time.time()
    return new_job(job_id, "work", qname, {"n": 1}, JobOptions(webhook=webhook, **options), now, now,  # type: ignore[arg-type]
                   owner=owner)


async def _run(backend: Backend, qname: str, outcomes: list[Outcome]) -> None:
    now = time.time()
    claimed = await backend.claim(qname, "w1", limit=len(outcomes), lease=30, now=now)
    assert len(claimed.jobs) == len(outcomes)
    await backend.finish(qname, "w1", outcomes, now)


async def test_completed_and_failed_jobs_get_deliveries_retries_and_cancels_do_not(backend: Backend,
                                                                                    qname: str) -> None:
    await backend.add([_job(qname, "ok", owner="ann"), _job(qname, "bad"), _job(qname, "again", attempts=2),
                       _job(qname, "silent", webhook=None)])
    now = time.time()
    await _run(backend, qname, [
        Outcome(job_id="ok", state=JobState.COMPLETED, result={"rows": 3, "ratio": 0.1}),
        Outcome(job_id="bad", state=JobState.FAILED, error="ValueError: no", traceback="tb"),
        Outcome(job_id="again", state=JobState.DELAYED, error="retry me", run_at=now + 60),
        Outcome(job_id="silent", state=JobState.COMPLETED, result=1),
    ])
    found = await backend.webhook_deliveries(qname)
    assert sorted((d.job_id, d.event, d.state, d.url) for d in found) == [
        ("bad", "job.failed", "pending", HOOK), ("ok", "job.completed", "pending", HOOK)]
    ok = next(d for d in found if d.job_id == "ok")
    job = await backend.get(qname, "ok")
    assert job is not None
    assert ok.job["result"] == {"rows": 3, "ratio": 0.1} and ok.job["task"] == "work" and ok.job["queue"] == qname
    assert ok.job["state"] == "completed" and ok.job["attempts"] == 1 and "error" not in ok.job
    assert ok.job["owner"] == "ann" and "owner" not in next(d for d in found if d.job_id == "bad").job
    assert abs(ok.job["created_at"] - job.created_at) < 1e-5 and ok.job["finished_at"] == job.finished_at
    assert ok.job["started_at"] == job.started_at
    bad = next(d for d in found if d.job_id == "bad")
    assert bad.job["error"] == "ValueError: no" and "result" not in bad.job
    assert [d.job_id for d in await backend.webhook_deliveries(qname, job_id="bad")] == ["bad"]
    assert int(found[0].id) > int(found[1].id)  # newest first


async def test_queue_webhook_applies_to_jobs_without_their_own(backend: Backend, qname: str) -> None:
    await backend.write_record(qname, "webhook", "url", "https://queue.example.com/h")
    await backend.add([_job(qname, "a", webhook=None), _job(qname, "b")])
    await _run(backend, qname, [Outcome(job_id="a", state=JobState.COMPLETED, result=None),
                                Outcome(job_id="b", state=JobState.COMPLETED, result=None)])
    urls = {d.job_id: d.url for d in await backend.webhook_deliveries(qname)}
    assert urls == {"a": "https://queue.example.com/h", "b": HOOK}


async def test_a_job_failed_by_stalls_gets_its_delivery(backend: Backend, qname: str) -> None:
    await backend.add([_job(qname, "lost", max_stalls=0)])
    now = time.time()
    await backend.claim(qname, "w1", limit=1, lease=1, now=now)
    [moved] = await backend.recover(qname, now + 5)
    assert moved.state is JobState.FAILED
    [d] = await backend.webhook_deliveries(qname)
    assert d.event == "job.failed" and "stalled" in d.job["error"]


async def test_leases_keep_senders_apart_and_attempts_are_recorded(backend: Backend, qname: str) -> None:
    await backend.add([_job(qname, "a")])
    await _run(backend, qname, [Outcome(job_id="a", state=JobState.COMPLETED, result="r")])
    now = time.time() + 1
    [d] = await backend.claim_webhooks(qname, "s1", limit=10, lease=30, now=now)
    assert d.sender == "s1" and d.lease_until == now + 30
    assert await backend.claim_webhooks(qname, "s2", limit=10, lease=30, now=now + 1) == []  # leased
    failed = DeliveryAttempt(at=now, ok=False, code=500, error="HTTP 500")
    assert not await backend.settle_webhook(qname, "s2", d.id, failed, now + 5, now)  # not its lease
    assert await backend.settle_webhook(qname, "s1", d.id, failed, now + 5, now)
    assert not await backend.settle_webhook(qname, "s1", d.id, failed, now + 5, now)  # settled already
    assert await backend.claim_webhooks(qname, "s2", limit=10, lease=30, now=now + 1) == []  # not due yet
    [again] = await backend.claim_webhooks(qname, "s2", limit=10, lease=30, now=now + 5)
    assert again.id == d.id and again.attempts == 1 and again.history[0].code == 500
    assert again.body() == d.body()  # the same bytes on every attempt
    assert await backend.settle_webhook(qname, "s2", d.id, DeliveryAttempt(at=now + 5, ok=True, code=200), None,
                                        now + 5)
    [done] = await backend.webhook_deliveries(qname, state="delivered")
    assert done.attempts == 2 and [h.code for h in done.history] == [500, 200] and done.next_at is None
    assert await backend.claim_webhooks(qname, "s1", limit=10, lease=30, now=now + 100) == []


async def test_an_expired_lease_is_claimed_again(backend: Backend, qname: str) -> None:
    await backend.add([_job(qname, "a")])
    await _run(backend, qname, [Outcome(job_id="a", state=JobState.COMPLETED, result=1)])
    now = time.time() + 1
    [d] = await backend.claim_webhooks(qname, "s1", limit=1, lease=10, now=now)
    [d2] = await backend.claim_webhooks(qname, "s2", limit=1, lease=10, now=now + 11)
    assert d2.id == d.id and d2.sender == "s2"
    assert not await backend.settle_webhook(qname, "s1", d.id, DeliveryAttempt(at=now, ok=True), None, now + 12)


async def test_dead_delivery_replayed_keeps_its_id(backend: Backend, qname: str) -> None:
    await backend.add([_job(qname, "a")])
    await _run(backend, qname, [Outcome(job_id="a", state=JobState.FAILED, error="boom")])
    now = time.time() + 1
    [d] = await backend.claim_webhooks(qname, "s1", limit=1, lease=10, now=now)
    assert await backend.settle_webhook(qname, "s1", d.id, DeliveryAttempt(at=now, ok=False, error="refused"), None,
                                        now)
    [dead] = await backend.webhook_deliveries(qname, state="dead")
    assert dead.id == d.id and dead.attempts == 1
    assert await backend.replay_webhook(qname, "999999", now) is None
    replayed = await backend.replay_webhook(qname, d.id, now + 1)
    assert replayed is not None and replayed.state == "pending" and replayed.attempts == 0
    assert replayed.message_id == d.message_id and len(replayed.history) == 1
    [again] = await backend.claim_webhooks(qname, "s2", limit=1, lease=10, now=now + 1)
    assert again.id == d.id and again.body() == d.body()


async def test_concurrent_claims_hand_each_delivery_out_once(backend: Backend, qname: str) -> None:
    await backend.add([_job(qname, f"j{i}") for i in range(20)])
    await _run(backend, qname, [Outcome(job_id=f"j{i}", state=JobState.COMPLETED, result=i) for i in range(20)])
    now = time.time() + 1
    batches = await asyncio.gather(*(backend.claim_webhooks(qname, f"s{i}", limit=3, lease=30, now=now)
                                     for i in range(10)))
    ids = [d.id for batch in batches for d in batch]
    assert len(ids) == len(set(ids)) == 20


async def test_a_job_failed_by_its_flow_gets_its_delivery(backend: Backend, qname: str) -> None:
    """A job whose dependency failed (fail_fast) fails without running: that is its end, and it is reported."""
    q = jobkit.Queue(qname, backend=backend)
    dep = await q.add("work", {"n": 1}, job_id="dep")
    waiter = await q.add("work", {"n": 2}, job_id="waiter", depends_on=[dep.id], webhook=HOOK)
    assert waiter.state is JobState.WAITING_CHILDREN
    await _run(backend, qname, [Outcome(job_id="dep", state=JobState.FAILED, error="boom")])
    assert (await backend.get(qname, "waiter")).state is JobState.FAILED  # type: ignore[union-attr]
    [d] = await backend.webhook_deliveries(qname)
    assert (d.job_id, d.event) == ("waiter", "job.failed") and "dep" in d.job["error"]
    assert d.job["started_at"] is None and d.job["attempts"] == 0


async def test_deliveries_outlive_their_jobs(backend: Backend, qname: str) -> None:
    """A job removed by retention in the very step that completed it keeps its delivery, and its queue is listed
    for senders though it holds no job any more."""
    await backend.add([_job(qname, "gone")])
    now = time.time()
    await backend.claim(qname, "w1", limit=1, lease=30, now=now)
    await backend.finish(qname, "w1", [Outcome(job_id="gone", state=JobState.COMPLETED, result=7)], now,
                         keep_completed=0)
    assert await backend.get(qname, "gone") is None and qname not in await backend.queues()
    assert qname in await backend.webhook_queues()
    [d] = await backend.claim_webhooks(qname, "s1", limit=1, lease=10, now=now + 1)
    assert d.job["result"] == 7
    assert await backend.settle_webhook(qname, "s1", d.id, DeliveryAttempt(at=now, ok=True, code=200), None, now)
    assert qname not in await backend.webhook_queues()
