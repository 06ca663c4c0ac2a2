"""A Redis outage longer than the job lease: the producer and an in-process worker ride it out, and no job is lost.

Redis (a private server with an append-only file fsynced on every write, so the data survives) stays down for
three leases. Long jobs started just before the outage are still running when it comes back, their leases long
expired: the lease keeper could not renew them, and the worker's maintenance may recover them to waiting before
the lease keeper gets through. Whatever wins, each job must end COMPLETED in state — never lost, never left
ACTIVE — and only jobs in flight during the outage may run twice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter

import pytest
from private_redis import RedisServer

import jobkit
from jobkit.models import JobState, Retention

from .redis_faults import outcome, settle, stop_run

log = logging.getLogger("tests.redis_outage")

QUEUE = "outage"
LEASE = 1.0
OUTAGE = 3.0  # seconds Redis stays down: three leases
LONG = OUTAGE + 2 * LEASE  # a long job started before the outage still runs when Redis is back
N_LONG = 3
BULK = 20
CONCURRENCY = 10
RESUME_BOUND = 5.0  # the claim back-off caps at 2 s; then one claim and one maintenance round
# Maintenance (lease recovery, retention) every 0.1 s, leases renewed every 0.6 s: after the outage, maintenance
# then usually recovers the long jobs before the lease keeper renews them, and the worker claims them again while
# it still runs them — the harder of the two paths (the other: the renewal gets through first and they go on).
MAINTENANCE_EVERY = 0.1
RENEW_EVERY = 0.6
SETTLE_TIMEOUT = 60.0
KEEP = Retention(age=3600)  # keep every completed job (not only the last 1000), so each one can be checked



Span = list[float]  # [start, end] of one attempt, monotonic; end is inf while it runs


class Attempts:
    """Every attempt the test's tasks ran, and events for the moments the test waits for."""

    def __init__(self) -> None:
        self.spans: dict[str, list[Span]] = {}
        self.ended = 0
        self._target = 0
        self._reached = asyncio.Event()
        self._watch: tuple[float, asyncio.Event] | None = None
        self.first_start_after: float | None = None

    def start(self, job_id: str) -> Span:
        now = time.monotonic()
        span = [now, float("inf")]
        self.spans.setdefault(job_id, []).append(span)
        if self._watch is not None and now > self._watch[0] and self.first_start_after is None:
            self.first_start_after = now
            self._watch[1].set()
        return span

    def end(self, span: Span) -> None:
        span[1] = time.monotonic()
        self.ended += 1
        if self.ended >= self._target:
            self._reached.set()

    async def more_ended(self, n: int, timeout: float) -> None:
        """Wait (bounded) until `n` more attempts have ended."""
        self._target = self.ended + n
        self._reached.clear()
        await asyncio.wait_for(self._reached.wait(), timeout)

    async def first_start(self, after: float, timeout: float) -> float:
        """Wait (bounded) for the first attempt started after `after`; return when it started."""
        started = asyncio.Event()
        self._watch = (after, started)
        await asyncio.wait_for(started.wait(), timeout)
        assert self.first_start_after is not None
        return self.first_start_after

    def running(self, job_id: str) -> bool:
        return any(end == float("inf") for _, end in self.spans.get(job_id, ()))

    def overlapping(self) -> list[str]:
        """Jobs two of whose attempts ran at the same moment."""
        out = []
        for job_id, spans in self.spans.items():
            ordered = sorted(spans)
            if any(a[1] > b[0] for a, b in itertools.pairwise(ordered)):
                out.append(job_id)
        return out



@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_worker_and_producer_survive_an_outage_longer_than_the_lease(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobkit.worker")
    url = redis_server.url()
    attempts = Attempts()
    long_started = asyncio.Event()

    @jobkit.task(name="outage_short", queue=QUEUE, keep_completed=KEEP)
    async def short(ctx: jobkit.Context, n: int) -> int:
        span = attempts.start(ctx.job_id)
        await asyncio.sleep(0.005)
        attempts.end(span)
        return n

    @jobkit.task(name="outage_long", queue=QUEUE, keep_completed=KEEP)
    async def long(ctx: jobkit.Context, n: int) -> int:
        """Works for LONG seconds without touching Redis (a long computation)."""
        span = attempts.start(ctx.job_id)
        if sum(1 for jid in attempts.spans if jid.startswith("long-")) == N_LONG:
            long_started.set()
        try:
            await asyncio.sleep(LONG)
        finally:
            attempts.end(span)
        return n

    queue = jobkit.Queue(QUEUE, backend=url)
    added: set[str] = set()
    add_failures: list[float] = []  # when an add failed

    async def add(task: jobkit.Task[int], ids: list[str]) -> None:
        failures = 0
        while True:  # the same ids make a retried add idempotent
            try:
                await queue.add_bulk(task, list(range(len(ids))), job_ids=ids)
                break
            except jobkit.BackendError as exc:
                add_failures.append(time.monotonic())
                failures += 1
                delay = min(0.05 * 2 ** failures, 1.0)
                log.info("add failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)  # back-off before the retry, not synchronisation
        added.update(ids)

    stop_producing = asyncio.Event()

    async def producer() -> None:
        n = 0
        while not stop_producing.is_set():
            await add(short, [f"short-{n + i:06d}" for i in range(BULK)])
            n += BULK
            await asyncio.sleep(0.02)  # pacing, not synchronisation

    worker = jobkit.Worker([short, long], backend=url, queues=[QUEUE], concurrency=CONCURRENCY, lease=LEASE,
                           maintenance_every=MAINTENANCE_EVERY, renew_every=RENEW_EVERY,
                           handle_signals=False)
    worker_task = asyncio.ensure_future(worker.run())
    producer_task = asyncio.ensure_future(producer())
    try:
        await asyncio.wait_for(worker.started.wait(), 10)
        await attempts.more_ended(200, 30)
        await add(long, [f"long-{i}" for i in range(N_LONG)])
        await asyncio.wait_for(long_started.wait(), 10)

        # -- the outage ----------------------------------------------------------------------------
        down_at = time.monotonic()
        redis_server.stop()
        await asyncio.sleep(OUTAGE)  # the outage itself: Redis stays down this long
        assert not worker_task.done(), f"the worker stopped during the outage: {outcome(worker_task)}"
        assert not producer_task.done(), f"the producer stopped during the outage: {outcome(producer_task)}"
        long_ids = sorted(jid for jid in attempts.spans if jid.startswith("long-"))
        assert all(attempts.running(jid) for jid in long_ids), "the long jobs must outlive the outage"
        redis_server.start()
        await redis_server.ready()
        up_at = time.monotonic()
        long_running_at_up = sum(attempts.running(jid) for jid in long_ids)

        resumed_at = await attempts.first_start(up_at, RESUME_BOUND)
        added_at_up = len(added)
        await attempts.more_ended(200, 30)
        while len(added) < added_at_up + 200:  # the producer's own pace; bounded by the test timeout
            assert not producer_task.done(), f"the producer stopped: {outcome(producer_task)}"
            await asyncio.sleep(0.05)
        assert not worker_task.done(), f"the worker stopped after the outage: {outcome(worker_task)}"

        # -- settle: every added job completes -----------------------------------------------------
        stop_producing.set()
        await asyncio.wait_for(producer_task, 10)
        counts = await settle(queue, worker_task, lambda c: c.completed >= len(added), SETTLE_TIMEOUT)
        assert (counts.waiting, counts.delayed, counts.active, counts.failed, counts.cancelled) == (0, 0, 0, 0, 0)
        assert counts.completed == len(added)
        assert worker.active == 0

        jobs = {jid: await queue.get(jid) for jid in sorted(added)}
        states = Counter(None if job is None else job.state for job in jobs.values())
        assert states == Counter({JobState.COMPLETED: len(added)}), states
        assert set(attempts.spans) == added

        # At-least-once: only a job running (or whose outcome was unwritten) across the outage may run twice.
        runs = {jid: len(spans) for jid, spans in attempts.spans.items()}
        duplicates = {jid: n - 1 for jid, n in runs.items() if n > 1}
        not_in_flight = [jid for jid in duplicates
                         if not any(s[0] <= up_at + LEASE and s[1] >= down_at - LEASE for s in attempts.spans[jid])]
        assert not not_in_flight, f"jobs ran twice though not in flight during the outage: {not_in_flight[:10]}"
        assert all(n <= 2 for n in runs.values()), {jid: n for jid, n in runs.items() if n > 2}
        overlapping = attempts.overlapping()
        assert not overlapping, f"two attempts of one job ran at the same time: {overlapping}"
        # A stall is the lease recovery of an in-flight job; one outage stalls a job once at most.
        stalls = Counter(job.stalls for job in jobs.values() if job is not None)
        assert set(stalls) <= {0, 1}, stalls
        long_recovered = sum(1 for jid in long_ids if (job := jobs[jid]) is not None and job.stalls)

        # The worker backs off while Redis is down (0.1 s doubling to 2 s), it does not spin.
        claim_failures = [r for r in caplog.records if "could not claim" in r.getMessage()]
        assert 2 <= len(claim_failures) <= 12, len(claim_failures)
        assert not [t for t in add_failures if t > up_at], "an add failed after Redis was back"

        report = (
            f"redis outage: added={len(added)} completed={counts.completed} duplicate_runs={sum(duplicates.values())}"
            f" (jobs {len(duplicates)}; long jobs: {long_running_at_up} of {N_LONG} still running at restart,"
            f" {long_recovered} recovered, {sum(duplicates.get(j, 0) for j in long_ids)} rerun) stalls={dict(stalls)}"
            f" claim_failures={len(claim_failures)} add_failures={len(add_failures)} server_down={up_at - down_at:.2f}s"
            f" first_start_after_up={resumed_at - up_at:.2f}s"
        )
        log.warning(report)
        print(report)
    finally:
        await stop_run(stop_producing, worker, producer_task, worker_task)
