"""Schedule policy without a backend: cron fire times across DST changes, missed ticks, overlap, tick ids."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import jobkit
from jobkit import cron
from jobkit.models import Schedule
from jobkit.schedules import MISSED_AFTER, following, plan, tick_id, upcoming

BERLIN = ZoneInfo("Europe/Berlin")


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: ZoneInfo | timezone = BERLIN) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, BERLIN).strftime("%m-%d %H:%M %Z")


def ticks(expr: str, start: float, n: int) -> list[float]:
    out = [cron.next_after(expr, "Europe/Berlin", start)]
    while len(out) < n:
        out.append(cron.next_after(expr, "Europe/Berlin", out[-1]))
    return out


def test_daily_job_runs_once_across_spring_forward_at_the_change() -> None:
    # 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST; 02:30 never happens, so it runs at 03:00.
    got = [local(t) for t in ticks("30 2 * * *", at(2026, 3, 27, 12), 4)]
    assert got == ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]


def test_daily_job_runs_once_across_fall_back() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice; a job at 02:30 runs once.
    got = ticks("30 2 * * *", at(2026, 10, 24, 12), 3)
    assert [local(t) for t in got] == ["10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]
    assert got[1] - got[0] == 25 * 3600  # that day has 25 hours
    assert cron.fire_times("30 2 * * *", "Europe/Berlin", at(2026, 10, 25, 0), at(2026, 10, 25, 23), 10) == got[:1]


def test_hourly_job_keeps_its_real_time_cadence_across_both_changes() -> None:
    fall = ticks("0 * * * *", at(2026, 10, 24, 23, 30), 26)
    assert all(b - a == 3600 for a, b in zip(fall, fall[1:], strict=False))  # 02:00 CEST and 02:00 CET both run
    spring = ticks("0 * * * *", at(2026, 3, 28, 23, 30), 24)
    assert all(b - a == 3600 for a, b in zip(spring, spring[1:], strict=False))
    assert "03-29 02:00" not in {local(t)[:11] for t in spring}  # that hour does not exist


def _every(seconds: float, next_at: float, **kw: object) -> Schedule:
    return Schedule(id="s", queue="q", task="t", every=seconds, next_at=next_at, **kw)  # type: ignore[arg-type]


def test_every_ticks_fall_on_multiples_of_the_interval() -> None:
    s = _every(60, 0)
    assert following(s, 1_000_000_030.5) == 1_000_000_080
    assert following(s, 1_000_000_020) == 1_000_000_080  # strictly after
    assert upcoming(s.model_copy(update={"next_at": 120.0}), 3) == [120.0, 180.0, 240.0]


def test_on_time_tick_fires_and_moves_on() -> None:
    fired, moved = plan(_every(10, 100), now=100.2, previous_running=False)  # type: ignore[misc]
    assert fired == [100] and moved.next_at == 110 and moved.fired == 1 and moved.last_job == tick_id("s", 100)


def test_missed_ticks_are_skipped_unless_caught_up() -> None:
    late = _every(10, 100)
    fired, moved = plan(late, now=145, previous_running=False)  # type: ignore[misc]
    assert fired == [140] and moved.skipped == 4 and moved.next_at == 150  # only the latest, still in time
    hourly = _every(3600, 3600)
    fired, moved = plan(hourly, now=3600 + MISSED_AFTER + 1, previous_running=False)  # type: ignore[misc]
    assert fired == [] and moved.skipped == 1 and moved.next_at == 7200  # the only due tick is too late as well
    fired, moved = plan(late.model_copy(update={"catch_up": 3}), now=1000, previous_running=False)  # type: ignore[misc]
    assert fired == [980, 990, 1000] and moved.next_at == 1010


def test_overlap_policies_while_the_previous_run_goes_on() -> None:
    s = _every(10, 100, last_job="s@x")
    fired, moved = plan(s, now=100, previous_running=True)  # type: ignore[misc]
    assert fired == [] and moved.skipped == 1 and moved.next_at == 110
    assert plan(s.model_copy(update={"overlap": "queue"}), now=100, previous_running=True) is None
    fired, _ = plan(s.model_copy(update={"overlap": "queue"}), now=190, previous_running=False)  # type: ignore[misc]
    assert fired == [190]  # the queued tick fires when the previous run ends, however late
    fired, _ = plan(s.model_copy(update={"overlap": "allow"}), now=100, previous_running=True)  # type: ignore[misc]
    assert fired == [100]


def test_paused_or_not_due_fires_nothing() -> None:
    paused, early = _every(10, 100, paused=True), _every(10, 100)
    assert plan(paused, now=500, previous_running=False) == ([], paused)
    assert plan(early, now=99, previous_running=False) == ([], early)


def test_tick_ids_are_the_schedule_and_the_utc_time() -> None:
    assert tick_id("nightly", at(2026, 12, 6, 3, 0, tz=timezone.utc)) == "nightly@2026-12-06T03:00:00Z"
    assert tick_id("fast", 1.5) == "fast@1970-01-01T00:00:01.500Z"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "61 * * * *"}, "invalid cron expression"),
    ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
    ({"every": 0.5}, "at least 1 second"),
    ({"every": float("inf")}, "at least 1 second"),
    ({}, "either cron="),
    ({"cron": "* * * * *", "every": timedelta(seconds=5)}, "not both"),
])
def test_bad_schedules_are_refused_with_what_to_write(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(jobkit.ConfigError, match=message):
        if "every" in kwargs and "cron" in kwargs:
            jobkit.task(queue="q", **kwargs)(_noop)  # type: ignore[call-overload]
        else:
            from jobkit.schedules import _spec

            _spec(kwargs.get("cron"), kwargs.get("every"), str(kwargs.get("tz", "UTC")))  # type: ignore[arg-type]


async def _noop(ctx: jobkit.Context) -> None:
    return None
