"""A Redis restart mid-run: a producer and an in-process worker ride it out, and no job is lost.

The test runs its own redis-server on a free loopback port with an append-only file fsynced on every write, so
a restart keeps the jobs (the production setup). It never touches the shared server on 6379.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import pytest
from private_redis import RedisServer

import jobkit
from jobkit.models import JobState, Retention

from .redis_faults import outcome, settle, stop_run

log = logging.getLogger("tests.redis_restart")

QUEUE = "restart"
BULK = 20
CONCURRENCY = 10
LEASE = 2.0
SETTLE_TIMEOUT = 60.0



async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition that has no event of its own, with a deadline."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)



@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_worker_and_producer_survive_a_redis_restart(redis_server: RedisServer) -> None:
    url = redis_server.url()

    runs: Counter[str] = Counter()
    started_at: dict[str, float] = {}  # first start of each job
    ended_at: dict[str, float] = {}  # first end of each job

    @jobkit.task(name="restart_probe", queue=QUEUE, max_stalls=100, keep_completed=Retention(age=3600))
    async def probe(ctx: jobkit.Context, n: int) -> int:
        started_at.setdefault(ctx.job_id, time.monotonic())
        await asyncio.sleep(0.005)
        runs[ctx.job_id] += 1
        ended_at.setdefault(ctx.job_id, time.monotonic())
        return n

    queue = jobkit.Queue(QUEUE, backend=url)
    added: set[str] = set()
    add_errors = 0
    stop_producing = asyncio.Event()

    async def producer() -> None:
        nonlocal add_errors
        n = 0
        while not stop_producing.is_set():
            ids = [f"job-{n + i:06d}" for i in range(BULK)]
            while True:  # the same ids make a retried add idempotent
                try:
                    await queue.add_bulk(probe, list(range(n, n + BULK)), job_ids=ids)
                    break
                except jobkit.BackendError as exc:
                    add_errors += 1
                    log.info("add failed (%s); retrying", exc)
                    await asyncio.sleep(0.1)
            added.update(ids)
            n += BULK
            await asyncio.sleep(0.01)  # pacing, not synchronisation

    worker = jobkit.Worker([probe], backend=url, queues=[QUEUE], concurrency=CONCURRENCY, lease=LEASE,
                           handle_signals=False)
    worker_task = asyncio.ensure_future(worker.run())
    producer_task = asyncio.ensure_future(producer())
    try:
        await asyncio.wait_for(worker.started.wait(), 10)
        await wait_until(lambda: len(runs) >= 300, 30, "300 jobs done before the restart")
        assert not worker_task.done() and not producer_task.done()

        # -- the restart ---------------------------------------------------------------------------
        done_before = len(runs)
        down_at = time.monotonic()
        redis_server.stop()
        redis_server.start()
        await redis_server.ready()
        up_at = time.monotonic()

        def first_after(t: float) -> float | None:
            later = [s for s in started_at.values() if s > t]
            return min(later) if later else None

        await wait_until(lambda: first_after(up_at) is not None, 30, "the worker to start a job after the restart")
        reconnected_at = first_after(up_at)
        assert reconnected_at is not None
        added_at_restart = len(added)
        await wait_until(lambda: len(runs) >= done_before + 300 and len(added) >= added_at_restart + 300, 30,
                         "300 more jobs added and done after the restart")
        assert not worker_task.done(), f"the worker stopped during the restart: {outcome(worker_task)}"
        assert not producer_task.done(), f"the producer stopped during the restart: {outcome(producer_task)}"

        # -- settle: every added job completes -----------------------------------------------------
        stop_producing.set()
        await asyncio.wait_for(producer_task, 10)
        counts = await settle(queue, worker_task, lambda c: c.completed >= len(added) and set(runs) >= added,
                              SETTLE_TIMEOUT)
        assert (counts.waiting, counts.delayed, counts.active, counts.failed, counts.cancelled) == (0, 0, 0, 0, 0)
        assert counts.completed == len(added)

        jobs = [await queue.get(jid) for jid in sorted(added)]
        states = Counter(None if job is None else job.state for job in jobs)
        assert states == Counter({JobState.COMPLETED: len(added)}), states

        assert set(runs) == added
        duplicates = {jid: c - 1 for jid, c in runs.items() if c > 1}
        # At-least-once: only a job that was running (or whose outcome was unwritten) across the outage runs
        # twice; a job first started after the server was back, or finished well before it went down, must not.
        not_in_flight = [jid for jid in duplicates
                         if not (started_at[jid] <= reconnected_at + LEASE and ended_at[jid] >= down_at - LEASE)]
        assert not not_in_flight, f"jobs ran twice though not in flight during the restart: {not_in_flight[:10]}"
        report = (f"redis restart: added={len(added)} completed={counts.completed} duplicate_runs="
                  f"{sum(duplicates.values())} (jobs {len(duplicates)}) add_retries={add_errors} "
                  f"server_down={up_at - down_at:.2f}s worker_disconnected={reconnected_at - down_at:.2f}s")
        log.warning(report)
        print(report)
    finally:
        await stop_run(stop_producing, worker, producer_task, worker_task)
