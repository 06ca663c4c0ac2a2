"""Schedules: which ticks fire, which are missed, and firing each exactly once — policy, above every backend.

A schedule is a record of its queue (`Backend.write_record`). A tick's job id is `<schedule id>@<UTC time>`, so
two workers that fire the same tick add one job (adding is idempotent on every backend); then the schedule moves
on by compare-and-swap, so exactly one of them records it. Ticks of `every=` fall on multiples of the interval
since the epoch, so every worker computes the same ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import ValidationError

from . import cron
from .backends import Backend, Record
from .errors import ConfigError
from .models import Schedule, new_job
from .task import Task

__all__ = ["KIND", "MISSED_AFTER", "Overlap", "fire_due", "following", "plan", "tick_id", "upcoming", "upsert"]

KIND = "schedule"
MISSED_AFTER = 60.0  # seconds: a tick seen later than this counts as missed (fired only with catch_up)
COUNT_MISSED_UP_TO = 10_000  # missed ticks counted one by one at most (a long outage of a 1 s schedule)
Overlap = Literal["skip", "queue", "allow"]

log = logging.getLogger("jobkit.worker")


def tick_id(schedule_id: str, at: float) -> str:
    """The job id of the tick at `at`: the same in every worker, so the tick is added once."""
    return f"{schedule_id}@{cron.utc_text(at)}"


def following(s: Schedule, after: float) -> float:
    """The first tick of `s` strictly after `after`."""
    if s.cron is not None:
        return cron.next_after(s.cron, s.tz, after)
    assert s.every is not None
    return (math.floor(after / s.every) + 1) * s.every


def upcoming(s: Schedule, n: int = 5) -> list[float]:
    """The next `n` fire times, from the next one on (for the dashboard and `jobkit schedules`)."""
    times = [s.next_at]
    while len(times) < n:
        times.append(following(s, times[-1]))
    return times


def _due(s: Schedule, now: float, last: int) -> tuple[list[float], int]:
    """The latest `last` ticks in [next_at, now], oldest first, and how many ticks that span holds."""
    if s.every is not None:
        count = math.floor((now - s.next_at) / s.every) + 1
        newest = s.next_at + (count - 1) * s.every
        return [newest - i * s.every for i in range(min(last, count))][::-1], count
    assert s.cron is not None
    ticks = cron.fire_times(s.cron, s.tz, s.next_at, now, max(last, COUNT_MISSED_UP_TO))
    return ticks[-last:], len(ticks)


def plan(s: Schedule, now: float, previous_running: bool) -> tuple[list[float], Schedule] | None:
    """The ticks to fire now and the schedule moved past `now`; None while an `overlap="queue"` tick waits for the
    previous run to end. Missed ticks (all but the latest, or the latest too when it is over MISSED_AFTER late) are
    skipped unless `catch_up` asks for up to that many of the latest; with `overlap="skip"` a tick that comes while
    the previous run is going is skipped."""
    if s.paused or s.next_at > now:
        return [], s
    if previous_running and s.overlap == "queue":
        return None
    ticks, count = _due(s, now, max(s.catch_up, 1))
    if s.catch_up == 0 and s.overlap != "queue" and now - ticks[-1] > MISSED_AFTER:
        ticks = []
    if previous_running and s.overlap == "skip":
        ticks = []
    moved = s.model_copy(update={
        "next_at": following(s, now), "fired": s.fired + len(ticks), "skipped": s.skipped + count - len(ticks),
        "last_job": tick_id(s.id, ticks[-1]) if ticks else s.last_job,
    })
    return ticks, moved


def _load(record: Record) -> Schedule | None:
    try:
        return Schedule.model_validate_json(record.value)
    except ValidationError as exc:
        log.error("schedule %r cannot be read (%s); remove it and schedule it again", record.key, exc)
        return None


async def _previous_running(backend: Backend, s: Schedule) -> bool:
    if s.last_job is None or s.overlap == "allow":
        return False
    job = await backend.get(s.queue, s.last_job)
    return job is not None and not job.finished


async def _fire(backend: Backend, s: Schedule, version: int, task: Task[Any], now: float) -> Schedule:
    """Fire what is due of `s` (read at `version`); the schedule as it now stands."""
    planned = plan(s, now, await _previous_running(backend, s))
    if planned is None:
        return s
    ticks, moved = planned
    if ticks:
        await backend.add([new_job(tick_id(s.id, at), task.name, s.queue, s.data, task.options, now, now)
                           for at in ticks])
    if await backend.write_record(s.queue, KIND, s.id, moved.model_dump_json(), version=version) is None:
        return s  # another worker moved it first; its jobs and ours have the same ids, so none doubled
    if ticks:
        log.info("schedule %s fired %d job(s) in %s; next at %s", s.id, len(ticks), s.queue,
                 cron.utc_text(moved.next_at))
    return moved


async def fire_due(backend: Backend, queue: str, tasks: Mapping[str, Task[Any]], now: float) -> float | None:
    """Fire every due tick of `queue`'s schedules whose task is in `tasks`; when the next one comes due."""
    wake: float | None = None
    for record in await backend.list_records(queue, KIND):
        s = _load(record)
        if s is None or s.paused or s.task not in tasks:
            continue
        if s.next_at <= now:
            s = await _fire(backend, s, record.version, tasks[s.task], now)
        if s.next_at > now:
            wake = s.next_at if wake is None else min(wake, s.next_at)
    return wake


def _spec(cron_expr: str | None, every: float | timedelta | None, tz: str) -> tuple[str | None, float | None]:
    if (cron_expr is None) == (every is None):
        raise ConfigError("give a schedule either cron='minute hour day month weekday' or every=seconds/timedelta")
    cron.zone(tz)
    if cron_expr is not None:
        return cron.check(cron_expr), None
    seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)  # type: ignore[arg-type]
    if not math.isfinite(seconds) or seconds < 1:
        raise ConfigError(f"every must be at least 1 second, not {every!r}")
    return None, seconds


async def upsert(
    backend: Backend, queue: str, schedule_id: str, task: Task[Any] | str, data: Any, *, cron_expr: str | None,
    every: float | timedelta | None, tz: str, catch_up: int, overlap: Overlap, paused: bool | None, now: float,
) -> Schedule:
    """Create or update schedule `schedule_id`: the same spec keeps its next tick and counters (so every worker
    declaring it at start changes nothing); a new spec starts from the next tick after `now`. `paused=None` keeps
    the stored pause."""
    if not schedule_id or "@" in schedule_id:
        raise ConfigError(f"invalid schedule id {schedule_id!r}: use a non-empty name without '@'")
    if catch_up < 0:
        raise ConfigError(f"catch_up counts missed ticks to fire, zero or more, not {catch_up}")
    if overlap not in ("skip", "queue", "allow"):
        raise ConfigError(f"overlap is 'skip', 'queue' or 'allow', not {overlap!r}")
    cron_text, seconds = _spec(cron_expr, every, tz)
    name = task.name if isinstance(task, Task) else task
    dumped = task.dump_payload(data) if isinstance(task, Task) else data
    for _ in range(10):  # compare-and-swap: another writer may come between our read and write
        record = await backend.read_record(queue, KIND, schedule_id)
        old = _load(record) if record else None
        fresh = Schedule(id=schedule_id, queue=queue, task=name, data=dumped, cron=cron_text, every=seconds, tz=tz,
                         catch_up=catch_up, overlap=overlap, paused=bool(paused), next_at=now, created_at=now)
        fresh.next_at = following(fresh, now)
        if old is not None:
            same = (old.task, old.data, old.cron, old.every, old.tz) == (name, dumped, cron_text, seconds, tz)
            keep = {"next_at": old.next_at, "last_job": old.last_job, "fired": old.fired, "skipped": old.skipped,
                    "created_at": old.created_at} if same else {"last_job": old.last_job, "created_at": old.created_at}
            fresh = fresh.model_copy(update={**keep, "paused": old.paused if paused is None else paused})
        if await backend.write_record(queue, KIND, schedule_id, fresh.model_dump_json(),
                                      version=record.version if record else 0) is not None:
            return fresh
    raise ConfigError(f"schedule {schedule_id!r} kept changing under us; try again")
