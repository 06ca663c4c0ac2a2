"""Schedules on every backend: stored and changed idempotently, each tick fired exactly once, missed ticks and
overlap as the schedule says."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from pydantic import BaseModel

import jobkit
from jobkit import schedules
from jobkit.backends import Backend
from jobkit.models import JobState, Outcome

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
        await asyncio.sleep(1.6)
    finally:
        running["now"] -= 1


TASKS = {tick.name: tick}


async def _until(pred: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async def check() -> None:
        while not await pred():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(check(), timeout)


async def _completed(q: jobkit.Queue, n: int) -> bool:
    return (await q.counts()).completed >= n


async def _ids(q: jobkit.Queue) -> list[str]:
    return sorted(j.id for j in await q.jobs(limit=1000))


# -- storing ---------------------------------------------------------------------------------------------
async def test_upsert_is_idempotent_and_admin_calls_work(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    first = await q.schedule("nightly", tick, {"title": "sales"}, cron="0  3 * * *", tz="Europe/Berlin")
    assert first.cron == "0 3 * * *" and first.data == {"title": "sales"} and not first.paused
    assert time.time() < first.next_at <= time.time() + 25 * 3600 and first.task == "s.tick"
    again = await q.schedule("nightly", tick, {"title": "sales"}, cron="0 3 * * *", tz="Europe/Berlin")
    assert again == first, "the same spec changes nothing"
    paused = await q.pause_schedule("nightly")
    assert paused.paused and (await q.schedule("nightly", tick, {"title": "sales"}, cron="0 3 * * *",
                                               tz="Europe/Berlin")).paused, "re-declaring keeps a pause"
    resumed = await q.resume_schedule("nightly")
    assert not resumed.paused and resumed.next_at > time.time()
    changed = await q.schedule("nightly", tick, {"title": "sales"}, cron="30 4 * * *", tz="Europe/Berlin",
                               overlap="allow", catch_up=2)
    assert (changed.cron, changed.overlap, changed.catch_up) == ("30 4 * * *", "allow", 2)
    assert schedules.upcoming(changed, 5)[0] == changed.next_at and len(set(schedules.upcoming(changed))) == 5
    await q.schedule("hourly", "s.tick", {}, every=3600)
    assert [s.id for s in await q.list_schedules()] == ["hourly", "nightly"]
    assert await q.get_schedule("nightly") == changed
    assert await q.remove_schedule("nightly") and not await q.remove_schedule("nightly")
    assert [s.id for s in await q.list_schedules()] == ["hourly"] and await q.get_schedule("nightly") is None
    with pytest.raises(jobkit.ScheduleNotFound, match="list_schedules"):
        await q.pause_schedule("nightly")


@pytest.mark.parametrize(("call", "error", "message"), [
    ({"payload": {"title": 42}, "every": 5}, jobkit.PayloadError, "title"),
    ({"cron": "0 25 * * *"}, jobkit.ConfigError, "invalid cron"),
    ({"every": 60, "tz": "Berlin"}, jobkit.ConfigError, "unknown time zone"),
    ({"every": 60, "catch_up": -1}, jobkit.ConfigError, "catch_up"),
    ({"every": 60, "catch_up": True}, jobkit.ConfigError, "catch_up"),
    ({"every": 60, "overlap": "replace"}, jobkit.ConfigError, "overlap"),
    ({"every": 60, "schedule_id": "a@b"}, jobkit.ConfigError, "schedule id"),
])
async def test_bad_schedules_are_refused_and_nothing_is_stored(
    backend: Backend, qname: str, call: dict[str, object], error: type[Exception], message: str,
) -> None:
    q = jobkit.Queue(qname, backend=backend)
    kwargs = {"schedule_id": "bad", "task": tick, **call}
    with pytest.raises(error, match=message):
        await q.schedule(**kwargs)  # type: ignore[arg-type]
    assert await q.list_schedules() == []


# -- firing: exactly once per tick --------------------------------------------------------------------------
async def test_racing_firers_add_each_tick_once(backend: Backend, qname: str) -> None:
    """Ten workers' schedule loops find the same tick due at once: one job, the schedule moved once."""
    q = jobkit.Queue(qname, backend=backend)
    s = await q.schedule("fast", tick, {"title": "t"}, every=60, overlap="allow")  # the jobs stay unfinished
    for n in range(3):
        now = s.next_at + 60 * n + 0.5
        await asyncio.gather(*(schedules.fire_due(backend, qname, TASKS, now) for _ in range(10)))
    assert await _ids(q) == [schedules.tick_id("fast", s.next_at + 60 * n) for n in range(3)]
    moved = await q.get_schedule("fast")
    assert moved is not None and moved.fired == 3 and moved.next_at == s.next_at + 180
    job = await q.get(schedules.tick_id("fast", s.next_at))
    assert job is not None and job.data == {"title": "t"} and job.name == "s.tick"


async def test_a_stale_firer_adds_nothing_even_when_the_tick_job_is_gone(backend: Backend, qname: str) -> None:
    """A worker that read the schedule before another fired the tick cannot fire it again, even after the
    tick's job was removed (the version check, not the job id, is what stops it)."""
    q = jobkit.Queue(qname, backend=backend)
    s = await q.schedule("fast", tick, {}, every=60)
    record = await backend.read_record(qname, schedules.KIND, "fast")
    assert record is not None
    await schedules.fire_due(backend, qname, TASKS, s.next_at + 1)
    [job] = (await backend.claim(qname, "w", limit=1, lease=30, now=s.next_at + 2)).jobs
    await backend.finish(qname, "w", [Outcome(job_id=job.id, state=JobState.COMPLETED)], s.next_at + 3)
    assert await backend.clean(qname, JobState.COMPLETED, finished_before=s.next_at + 4) == 1
    assert await _ids(q) == []
    assert await schedules._fire(backend, s, record.version, tick.options, s.next_at + 4) is None
    assert await _ids(q) == []


async def test_changing_a_schedule_never_fires_a_tick_again(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    s = await q.schedule("fast", tick, {}, every=60)
    await schedules.fire_due(backend, qname, TASKS, s.next_at)
    # A producer whose clock is behind the workers' changes the timing: its next tick is after the one fired.
    changed = await schedules.upsert(backend, qname, "fast", tick, {}, cron_expr=None, every=30, tz="UTC",
                                     catch_up=5, overlap="allow", paused=None, now=s.next_at - 45)
    assert changed.next_at == s.next_at + 30 and changed.last_at == s.next_at
    await schedules.fire_due(backend, qname, TASKS, s.next_at + 31)
    assert await _ids(q) == [schedules.tick_id("fast", s.next_at), schedules.tick_id("fast", s.next_at + 30)]


async def test_removed_or_paused_schedules_fire_nothing(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    s = await q.schedule("gone", tick, {}, every=60)
    record = await backend.read_record(qname, schedules.KIND, "gone")
    assert record is not None
    await q.remove_schedule("gone")
    assert await schedules._fire(backend, s, record.version, tick.options, s.next_at) is None
    await q.schedule("held", tick, {}, every=60)
    await q.pause_schedule("held")
    assert await schedules.fire_due(backend, qname, TASKS, s.next_at + 600) is None
    assert await _ids(q) == []
    before = time.time()
    resumed = await q.resume_schedule("held")
    assert before < resumed.next_at <= time.time() + 60  # from now on: the ticks of the pause do not fire later


async def test_only_workers_serving_the_task_fire_it(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    s = await q.schedule("other", "s.unknown-here", {"x": 1}, every=60)
    assert await schedules.fire_due(backend, qname, TASKS, s.next_at + 1) is None
    assert await _ids(q) == []


# -- missed ticks and overlap --------------------------------------------------------------------------------
async def test_missed_ticks_are_skipped_or_caught_up(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    now = time.time()
    for sid, catch_up in (("skip", 0), ("catch", 3)):
        s = await q.schedule(sid, tick, {"title": sid}, every=60, catch_up=catch_up)
        record = await backend.read_record(qname, schedules.KIND, sid)
        assert record is not None
        outage = s.model_copy(update={"next_at": s.next_at - 600})  # every worker was down for ten minutes
        assert await backend.write_record(qname, schedules.KIND, sid, outage.model_dump_json(),
                                          version=record.version)
    wake = await schedules.fire_due(backend, qname, TASKS, now)
    assert wake is not None and now < wake <= now + 60
    by_schedule = Counter(j.split("@")[0] for j in await _ids(q))
    assert by_schedule == {"catch": 3, "skip": 1}, by_schedule  # skip: only the latest tick, which is in time
    skipped = await q.get_schedule("skip")
    assert skipped is not None and skipped.skipped == 9 and skipped.fired == 1
    assert await schedules.fire_due(backend, qname, TASKS, now) == wake  # nothing fires twice
    assert len(await _ids(q)) == 4


async def test_overlap_queue_holds_the_tick_until_the_previous_run_ends(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    s = await q.schedule("q", tick, {}, every=60, overlap="queue")
    first = schedules.tick_id("q", s.next_at)
    await schedules.fire_due(backend, qname, TASKS, s.next_at)
    await schedules.fire_due(backend, qname, TASKS, s.next_at + 60)  # the first job has not even started
    held = await q.get_schedule("q")
    assert held is not None and held.next_at == s.next_at + 60 and await _ids(q) == [first]
    [job] = (await backend.claim(qname, "w", limit=1, lease=30, now=s.next_at + 61)).jobs
    await backend.finish(qname, "w", [Outcome(job_id=job.id, state=JobState.COMPLETED)], s.next_at + 170)
    await schedules.fire_due(backend, qname, TASKS, s.next_at + 175)  # 115 s late, but it was held
    assert await _ids(q) == [first, schedules.tick_id("q", s.next_at + 120)]  # ticks that came meanwhile merge


async def test_overlap_skip_and_allow(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    s = await q.schedule("skip", tick, {}, every=60)
    await q.schedule("allow", tick, {}, every=60, overlap="allow")
    await schedules.fire_due(backend, qname, TASKS, s.next_at)
    await schedules.fire_due(backend, qname, TASKS, s.next_at + 60)  # the first jobs are unfinished
    assert Counter(j.split("@")[0] for j in await _ids(q)) == {"allow": 2, "skip": 1}
    skipped = await q.get_schedule("skip")
    assert skipped is not None and skipped.skipped == 1 and skipped.next_at == s.next_at + 120


# -- workers ------------------------------------------------------------------------------------------------
async def test_two_workers_run_each_tick_once(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.schedule("fast", tick, {"title": "t"}, every=1)
    started = time.time()
    workers = [jobkit.Worker([tick], backend=backend, queues=[qname], handle_signals=False) for _ in range(2)]
    async with workers[0], workers[1]:
        await _until(lambda: _completed(q, 3), 10)
    ids = await _ids(q)
    assert all(i.startswith("fast@") for i in ids)
    assert all(runs[i] == 1 for i in ids), {i: runs[i] for i in ids}
    assert len(ids) <= time.time() - started + 1, (len(ids), time.time() - started)  # one a second, not two
    s = await q.get_schedule("fast")
    assert s is not None and s.fired == len(ids)


async def test_overlap_skip_never_runs_two_at_once_in_a_worker(backend: Backend, qname: str) -> None:
    running.update(now=0, most=0)
    q = jobkit.Queue(qname, backend=backend)
    await q.schedule("slow", long_run, every=1)
    async with jobkit.Worker([long_run], backend=backend, queues=[qname], concurrency=4, handle_signals=False):
        await _until(lambda: _completed(q, 2), 12)
    s = await q.get_schedule("slow")
    assert s is not None and s.skipped >= 1 and running["most"] == 1


@jobkit.task(name="s.declared", every=1)
async def declared(ctx: jobkit.Context, payload: Report) -> str:
    return payload.title


async def test_a_task_with_every_is_scheduled_by_its_workers(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(declared.queue, backend=backend)
    async with jobkit.Worker([declared], backend=backend, handle_signals=False):
        await _until(lambda: _completed(q, 2), 10)
    s = await q.get_schedule("s.declared")
    assert s is not None and s.every == 1 and s.task == "s.declared" and s.declared
    assert {j.result for j in await q.jobs(state=JobState.COMPLETED)} == {"daily"}


async def test_a_task_that_drops_its_schedule_removes_it_at_the_next_start(backend: Backend, qname: str) -> None:
    async def report(ctx: jobkit.Context) -> None:
        return None

    q = jobkit.Queue(qname, backend=backend)
    before = jobkit.task(name=f"s.{qname}", queue=qname, cron="0 3 * * *")(report)
    await schedules.declare(backend, [qname], {before.name: before}, time.time())
    await q.schedule("mine", before, cron="0 4 * * *")  # made by a call: workers leave it alone
    assert [s.id for s in await q.list_schedules()] == ["mine", before.name]
    after = jobkit.task(name=f"s.{qname}", queue=qname)(report)  # the same function, now without cron=
    await schedules.declare(backend, [qname], {after.name: after}, time.time())
    assert [s.id for s in await q.list_schedules()] == ["mine"]


async def test_a_task_declares_its_catch_up_and_overlap(backend: Backend, qname: str) -> None:
    async def report(ctx: jobkit.Context) -> None:
        return None

    t = jobkit.task(name=f"s.{qname}", queue=qname, every=60, catch_up=2, overlap="allow")(report)
    await schedules.declare(backend, [qname], {t.name: t}, time.time())
    s = await jobkit.Queue(qname, backend=backend).get_schedule(t.name)
    assert s is not None and (s.catch_up, s.overlap, s.declared) == (2, "allow", True)
    with pytest.raises(jobkit.ConfigError, match="overlap is 'skip', 'queue' or 'allow'"):
        jobkit.task(name=f"s.{qname}.bad", queue=qname, every=60, overlap="sometimes")(report)  # type: ignore[arg-type]
    with pytest.raises(jobkit.ConfigError, match="catch_up counts the missed ticks"):
        jobkit.task(name=f"s.{qname}.bad", queue=qname, every=60, catch_up=-1)(report)
