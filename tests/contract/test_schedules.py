"""Schedules on every backend: stored and changed idempotently, fired by workers exactly once per tick."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

import jobkit
from jobkit import schedules
from jobkit.backends import Backend
from jobkit.models import JobState

runs: Counter[str] = Counter()  # job id -> times a tick's job ran
running: dict[str, int] = {"now": 0, "most": 0}


class Report(BaseModel):
    title: str = "daily"


@jobkit.task(name="s.tick")
async def tick(ctx: jobkit.Context, payload: Report) -> str:
    runs[ctx.job_id] += 1
    return payload.title


@jobkit.task(name="s.long")
async def long_run(ctx: jobkit.Context) -> None:
    running["now"] += 1
    running["most"] = max(running["most"], running["now"])
    try:
        await asyncio.sleep(2.2)
    finally:
        running["now"] -= 1


async def _until(pred: Callable[[], Any], timeout: float) -> None:
    async def check() -> None:
        while not await pred():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(check(), timeout)


async def test_upsert_is_idempotent_and_admin_calls_work(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    first = await q.schedule("nightly", tick, {"title": "sales"}, cron="0 3 * * *", tz="Europe/Berlin")
    assert first.cron == "0 3 * * *" and first.data == {"title": "sales"} and not first.paused
    again = await q.schedule("nightly", tick, {"title": "sales"}, cron="0 3 * * *", tz="Europe/Berlin")
    assert again == first, "the same spec changes nothing"
    paused = await q.pause_schedule("nightly")
    assert paused.paused and (await q.schedule("nightly", tick, {"title": "sales"}, cron="0 3 * * *",
                                               tz="Europe/Berlin")).paused, "re-declaring keeps a pause"
    resumed = await q.resume_schedule("nightly")
    assert not resumed.paused and resumed.next_at > time.time()
    changed = await q.schedule("nightly", tick, {"title": "sales"}, cron="30 4 * * *", tz="Europe/Berlin")
    assert changed.cron == "30 4 * * *" and schedules.upcoming(changed, 5)[0] == changed.next_at
    assert [s.id for s in await q.schedules()] == ["nightly"]
    assert (await q.get_schedule("nightly")) == changed
    assert await q.remove_schedule("nightly") and not await q.remove_schedule("nightly")
    assert await q.schedules() == [] and await q.get_schedule("nightly") is None
    with pytest.raises(jobkit.ScheduleNotFound):
        await q.pause_schedule("nightly")
    with pytest.raises(jobkit.PayloadError):
        await q.schedule("bad", tick, {"title": 42}, every=5)


async def test_two_workers_fire_each_tick_once(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.schedule("fast", tick, {"title": "t"}, every=1)
    started = time.time()
    workers = [jobkit.Worker([tick], backend=backend, queues=[qname], handle_signals=False) for _ in range(2)]
    async with workers[0], workers[1]:
        await _until(lambda: _done(q, 4), 10)
    jobs = await q.jobs(state=JobState.COMPLETED, limit=100)
    ids = [j.id for j in jobs]
    assert len(ids) == len(set(ids)) >= 4
    assert all(i.startswith("fast@") for i in ids)
    assert all(runs[i] == 1 for i in ids), {i: runs[i] for i in ids}
    elapsed = time.time() - started
    assert len(ids) <= elapsed + 2, (len(ids), elapsed)  # one per second, not one per worker
    s = await q.get_schedule("fast")
    assert s is not None and s.fired >= len(ids) and s.fired == len(await q.jobs(limit=100))


async def _done(q: jobkit.Queue, n: int) -> bool:
    return (await q.counts()).completed >= n


async def test_overlap_skip_never_runs_two_at_once(backend: Backend, qname: str) -> None:
    running.update(now=0, most=0)
    q = jobkit.Queue(qname, backend=backend)
    await q.schedule("slow", long_run, every=1)
    async with jobkit.Worker([long_run], backend=backend, queues=[qname], handle_signals=False):
        await _until(lambda: _done(q, 2), 12)
    s = await q.get_schedule("slow")
    assert s is not None and s.skipped >= 1 and running["most"] == 1


async def test_missed_ticks_after_an_outage_are_caught_up_when_asked(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    now = time.time()
    for sid, catch_up in (("skip", 0), ("catch", 3)):
        s = await q.schedule(sid, tick, {"title": sid}, every=60, catch_up=catch_up)
        record = await backend.read_record(qname, schedules.KIND, sid)
        assert record is not None
        outage = s.model_copy(update={"next_at": s.next_at - 600})  # every worker was down for ten minutes
        assert await backend.write_record(qname, schedules.KIND, sid, outage.model_dump_json(),
                                          version=record.version)
    wake = await schedules.fire_due(backend, qname, {tick.name: tick}, now)
    assert wake is not None and now < wake <= now + 60
    by_schedule = Counter(j.id.split("@")[0] for j in await q.jobs(limit=100))
    assert by_schedule == {"catch": 3, "skip": 1}, by_schedule  # skip: only the latest tick, which is in time
    skipped = await q.get_schedule("skip")
    assert skipped is not None and skipped.skipped >= 9 and skipped.fired == 1
    assert await schedules.fire_due(backend, qname, {tick.name: tick}, now) == wake  # nothing fires twice
    assert len(await q.jobs(limit=100)) == 4


@jobkit.task(name="s.declared", every=1)
async def declared(ctx: jobkit.Context, payload: Report) -> str:
    return payload.title


async def test_a_task_with_every_is_scheduled_by_its_workers(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(declared.queue, backend=backend)
    async with jobkit.Worker([declared], backend=backend, handle_signals=False):
        await _until(lambda: _done(q, 2), 10)
    s = await q.get_schedule("s.declared")
    assert s is not None and s.every == 1 and s.task == "s.declared"
    assert {j.result for j in await q.jobs(state=JobState.COMPLETED)} == {"daily"}
