"""Schedules: which ticks fire, which are missed or skipped, and firing each exactly once — policy above every backend.

A schedule is a record of its queue. A worker fires a due tick by writing the schedule moved past it, at the
version it read, together with the tick's job, whose id is `<schedule id>@<UTC time>`, in one atomic step
(`Backend.write_record(..., add=...)`: one Lua script, one SQLite transaction). Of workers racing for a tick one
write wins; the others change nothing. Ticks only move forward (past `last_at`, also when the schedule changes),
so no tick fires twice, even when its job is long gone. `every=` ticks fall on multiples of the interval since
the epoch, cron ticks come from `cron`, so every worker computes the same ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from . import cron
from .backends import Backend, Record
from .errors import ConfigError, ScheduleNotFound
from .models import Job, JobOptions, Schedule, dump_json, new_job
from .task import Task, _registry

__all__ = [
    "KIND", "MISSED_AFTER", "Overlap", "declare", "fire_due", "following", "get", "list_all", "list_queues", "plan",
    "remove",
    "set_paused", "tick_id", "upcoming", "upsert", "when",
]

KIND = "schedule"  # the records' kind
MISSED_AFTER = 60.0  # seconds: a tick first seen later than this was missed (fired only with catch_up)
CATCH_UP_MAX = 1000  # missed ticks one fire may add
CAS_TRIES = 10  # read-modify-write rounds before giving up on a schedule that keeps changing
Overlap = Literal["skip", "queue", "allow"]
OVERLAPS = ("skip", "queue", "allow")

log = logging.getLogger("jobkit.schedules")


def tick_id(schedule_id: str, at: float) -> str:
    """The job id of the tick at `at`: the same in every worker."""
    return f"{schedule_id}@{cron.utc_text(at)}"


def following(s: Schedule, after: float) -> float:
    """The first tick of `s` strictly after `after`."""
    if s.cron is not None:
        return cron.next_after(s.cron, s.tz, after)
    assert s.every is not None
    k = math.floor(after / s.every) + 1
    return k * s.every if k * s.every > after else (k + 1) * s.every  # k - 1 when the division rounds down


def upcoming(s: Schedule, n: int = 5, now: float | None = None) -> list[float]:
    """The next `n` fire times (for the dashboard and `jobkit schedules`); a paused schedule's are those it
    would have if resumed at `now`."""
    times = [_resumed_at(s, now) if s.paused and now is not None else s.next_at]
    while len(times) < n:
        times.append(following(s, times[-1]))
    return times


def when(s: Schedule, at: float) -> str:
    """A fire time as people read it: in the schedule's time zone (UTC for `every=`), to the second if needed."""
    local = datetime.fromtimestamp(at, cron.zone(s.tz))
    return local.strftime("%Y-%m-%d %H:%M" + (":%S" if local.second or at != int(at) else "") + " %Z")


def _resumed_at(s: Schedule, now: float) -> float:
    """The next tick from `now` on, never at or before the latest tick fired."""
    return following(s, max(now, s.last_at or -math.inf))


def _due(s: Schedule, now: float, last: int) -> tuple[list[float], int]:
    """The latest `last` ticks in [next_at, now], oldest first, and how many that span holds."""
    if s.every is not None:
        first, newest = round(s.next_at / s.every), math.floor(now / s.every)
        count = max(newest - first + 1, 0)
        return [k * s.every for k in range(max(first, newest - last + 1), newest + 1)], count
    assert s.cron is not None
    return cron.due(s.cron, s.tz, s.next_at, now, last)


def plan(s: Schedule, now: float, previous: Job | None) -> tuple[list[float], Schedule] | None:
    """The ticks to fire at `now` and the schedule moved past them; None while a tick waits (`overlap="queue"`)
    for `previous`, the latest tick's job, to end.

    Of the ticks due, only the latest fires, and only if it is at most MISSED_AFTER late: the others were missed
    (every worker down); `catch_up=N` fires the latest N however late. With `overlap="skip"` no tick fires
    while the previous run is unfinished; with "queue" the tick waits for it, then fires however late."""
    if s.paused or s.next_at > now:
        return [], s
    unfinished = previous is not None and not previous.finished
    if unfinished and s.overlap == "queue":
        return None
    ticks, count = _due(s, now, max(s.catch_up, 1))
    ticks = [at for at in ticks if s.last_at is None or at > s.last_at]  # never one at or before the last fired
    held = (s.overlap == "queue" and previous is not None and previous.finished_at is not None
            and bool(ticks) and previous.finished_at >= ticks[-1])
    if (s.catch_up == 0 and not held and ticks and now - ticks[-1] > MISSED_AFTER) or (
            unfinished and s.overlap == "skip"):
        ticks = []
    moved = s.model_copy(update={
        "next_at": following(s, now), "fired": s.fired + len(ticks), "skipped": s.skipped + count - len(ticks),
        "last_at": ticks[-1] if ticks else s.last_at, "last_job": tick_id(s.id, ticks[-1]) if ticks else s.last_job,
    })
    return ticks, moved


def _load(record: Record) -> Schedule | None:
    try:
        return Schedule.model_validate_json(record.value)
    except ValidationError as exc:
        log.error("schedule %r cannot be read (%s): remove it and schedule it again", record.key, exc)
        return None


async def _fire(backend: Backend, s: Schedule, version: int, options: JobOptions, now: float) -> Schedule | None:
    """Fire what is due of `s` (as read at `version`): the schedule as it now stands, or None when another
    worker moved it first (then nothing was written here)."""
    previous = None
    if s.last_job is not None and s.overlap != "allow":
        previous = await backend.get(s.queue, s.last_job)
    planned = plan(s, now, previous)
    if planned is None:
        return s
    ticks, moved = planned
    jobs = [new_job(tick_id(s.id, at), s.task, s.queue, s.data, options, now, now) for at in ticks]
    if await backend.write_record(s.queue, KIND, s.id, moved.model_dump_json(), version=version, add=jobs) is None:
        return None
    if jobs:
        log.debug("schedule %s added %s; next tick %s", s.id, ", ".join(j.id for j in jobs),
                 cron.utc_text(moved.next_at))
    elif moved.skipped > s.skipped:
        log.info("schedule %s skipped %d tick(s) (%s); next tick %s", s.id, moved.skipped - s.skipped,
                 "previous run still going" if previous is not None and not previous.finished else "missed",
                 cron.utc_text(moved.next_at))
    return moved


async def fire_due(backend: Backend, queue: str, tasks: Mapping[str, Task[Any]], now: float) -> float | None:
    """Fire every due tick of `queue`'s schedules whose task is in `tasks`; when to look again (None: no
    schedule to wait for; `now` when another worker moved one meanwhile, so read them again)."""
    wake: float | None = None
    for record in await backend.list_records(queue, KIND):
        s = _load(record)
        if s is None or s.paused or s.task not in tasks:
            continue
        if s.next_at <= now:
            fired = await _fire(backend, s, record.version, tasks[s.task].options, now)
            if fired is None:
                return now
            s = fired
        if s.next_at > now:
            wake = s.next_at if wake is None else min(wake, s.next_at)
    return wake


# -- the admin side: create, change, pause, remove ---------------------------------------------------------
def _check_policy(schedule_id: str, catch_up: int, overlap: str) -> None:
    if not isinstance(schedule_id, str) or not schedule_id or "@" in schedule_id or "\n" in schedule_id:
        raise ConfigError(f"invalid schedule id {schedule_id!r}: use a non-empty name without '@' or newlines")
    if isinstance(catch_up, bool) or not isinstance(catch_up, int) or not 0 <= catch_up <= CATCH_UP_MAX:
        raise ConfigError(f"catch_up counts the missed ticks to fire after an outage (0 skips them, at most"
                          f" {CATCH_UP_MAX}), such as catch_up=3, not {catch_up!r}")
    if overlap not in OVERLAPS:
        raise ConfigError(f"overlap is 'skip', 'queue' or 'allow', not {overlap!r}")


def _payload(task: Task[Any] | str, data: Any) -> tuple[str, Any]:
    """The task's name and the payload as its jobs will get it, validated now (PayloadError) if it is known."""
    t = task if isinstance(task, Task) else _registry.get(task)
    if t is not None:
        return t.name, t.dump_payload(data)
    dump_json(data, f"payload for task {task!r}")
    return str(task), data


async def upsert(
    backend: Backend, queue: str, schedule_id: str, task: Task[Any] | str, data: Any, *, cron_expr: str | None,
    every: float | timedelta | None, tz: str, catch_up: int, overlap: Overlap, paused: bool | None, now: float,
    declared: bool = False,
) -> Schedule:
    """Create or update schedule `schedule_id`. The same task, payload and timing keep its next tick and counters
    (so every worker declaring it at start changes nothing); new timing starts from the next tick after `now`.
    `paused=None` keeps the stored pause."""
    _check_policy(schedule_id, catch_up, overlap)
    cron_text, seconds = cron.timing(cron_expr, every, tz)
    name, dumped = _payload(task, data)
    for _ in range(CAS_TRIES):
        record = await backend.read_record(queue, KIND, schedule_id)
        old = _load(record) if record is not None else None
        fresh = Schedule(id=schedule_id, queue=queue, task=name, data=dumped, cron=cron_text, every=seconds, tz=tz,
                         catch_up=catch_up, overlap=overlap, paused=bool(paused), declared=declared, next_at=now,
                         created_at=now)
        if old is None:
            fresh.next_at = following(fresh, now)
        else:
            same = (old.task, old.data, old.cron, old.every, old.tz) == (name, dumped, cron_text, seconds, tz)
            fresh = fresh.model_copy(update={
                "paused": old.paused if paused is None else paused, "last_at": old.last_at,
                "last_job": old.last_job, "fired": old.fired, "skipped": old.skipped, "created_at": old.created_at})
            keep = same and (fresh.paused or not old.paused)  # unpausing moves on, as resume_schedule does
            fresh.next_at = old.next_at if keep else _resumed_at(fresh, now)
            if fresh == old:
                return old
        if await backend.write_record(queue, KIND, schedule_id, fresh.model_dump_json(),
                                      version=record.version if record is not None else 0) is not None:
            return fresh
    raise ConfigError(f"schedule {schedule_id!r} kept changing while it was being written; try again")


async def get(backend: Backend, queue: str, schedule_id: str) -> Schedule | None:
    record = await backend.read_record(queue, KIND, schedule_id)
    return None if record is None else _load(record)


async def list_all(backend: Backend, queue: str) -> list[Schedule]:
    """The queue's schedules by id (one that cannot be read is logged and left out)."""
    return [s for s in map(_load, await backend.list_records(queue, KIND)) if s is not None]


async def list_queues(backend: Backend) -> list[str]:
    """The queues that have schedules, sorted."""
    return await backend.record_queues(KIND)


async def set_paused(backend: Backend, queue: str, schedule_id: str, paused: bool, now: float) -> Schedule:
    """Pause or resume; a resumed schedule goes on from its next tick after `now` (none fired meanwhile)."""
    for _ in range(CAS_TRIES):
        record = await backend.read_record(queue, KIND, schedule_id)
        s = None if record is None else _load(record)
        if record is None or s is None:
            raise ScheduleNotFound(f"no schedule {schedule_id!r} in queue {queue!r}: see Queue.list_schedules()")
        if s.paused == paused:
            return s
        update: dict[str, Any] = {"paused": paused}
        if not paused:
            update["next_at"] = _resumed_at(s, now)
        s = s.model_copy(update=update)
        if await backend.write_record(queue, KIND, schedule_id, s.model_dump_json(),
                                      version=record.version) is not None:
            return s
    raise ConfigError(f"schedule {schedule_id!r} kept changing while it was being written; try again")


async def remove(backend: Backend, queue: str, schedule_id: str) -> bool:
    """Forget a schedule (the jobs it added stay); False if there was none."""
    if await backend.read_record(queue, KIND, schedule_id) is None:
        return False
    await backend.write_record(queue, KIND, schedule_id, None)
    return True


async def declare(backend: Backend, queues: list[str], tasks: Mapping[str, Task[Any]], now: float) -> None:
    """A worker's start: upsert the schedules its tasks declare (`@task(cron=...)`) in the queues it serves, and
    remove those declared by a task it serves that no longer declares one."""
    for queue in queues:
        stored = {s.id: s for s in await list_all(backend, queue)}
        for t in tasks.values():
            if t.queue != queue:
                continue
            if t.schedule is None:
                gone = stored.get(t.name)
                if gone is not None and gone.declared and gone.task == t.name:
                    await remove(backend, queue, t.name)
                    log.info("removed schedule %s: task %s no longer declares one", t.name, t.name)
                continue
            await upsert(backend, queue, t.name, t, t.scheduled_payload(), cron_expr=t.schedule.cron,
                         every=t.schedule.every, tz=t.schedule.tz, catch_up=t.schedule.catch_up,
                         overlap=t.schedule.overlap, paused=None,
                         now=now, declared=True)
