"""Schedule policy without a backend: cron fire times across DST changes, missed ticks, overlap, tick ids."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

import jobkit
from jobkit import cron
from jobkit.models import Job, JobOptions, JobState, Schedule, new_job
from jobkit.schedules import MISSED_AFTER, following, plan, tick_id, upcoming
from jobkit.task import TaskSchedule

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: ZoneInfo | timezone = BERLIN, fold: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).timestamp()


def local(ts: float, tz: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%m-%d %H:%M %Z")


def ticks(expr: str, start: float, n: int, tz: str = "Europe/Berlin") -> list[float]:
    """n fire times after `start`, each found from the one before (as a worker finds them)."""
    out = [cron.next_after(expr, tz, start)]
    while len(out) < n:
        out.append(cron.next_after(expr, tz, out[-1]))
    return out


# -- DST: Europe/Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST, falls back 2026-10-25 03:00 -> 02:00;
#    America/New_York springs forward 2026-03-08 02:00 EST -> 03:00 EDT, falls back 2026-11-01 02:00 -> 01:00.
def test_a_daily_time_inside_the_skipped_hour_runs_once_at_the_change() -> None:
    assert [local(t) for t in ticks("30 2 * * *", at(2026, 3, 27, 12), 4)] == [
        "03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]
    got = ticks("30 2 * * *", at(2026, 3, 7, 12, tz=NEW_YORK), 3, "America/New_York")
    assert [local(t, NEW_YORK) for t in got] == ["03-08 03:00 EDT", "03-09 02:30 EDT", "03-10 02:30 EDT"]


def test_a_daily_time_inside_the_repeated_hour_runs_once_the_first_time() -> None:
    got = ticks("30 2 * * *", at(2026, 10, 24, 12), 3)
    assert [local(t) for t in got] == ["10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]
    assert got[1] - got[0] == 25 * 3600  # that day has 25 hours
    got = ticks("30 1 * * *", at(2026, 10, 31, 12, tz=NEW_YORK), 3, "America/New_York")
    assert [local(t, NEW_YORK) for t in got] == ["11-01 01:30 EDT", "11-02 01:30 EST", "11-03 01:30 EST"]


def test_a_daily_time_outside_the_changed_hour_keeps_its_wall_time() -> None:
    got = ticks("0 3 * * *", at(2026, 3, 28, 12), 2) + ticks("0 3 * * *", at(2026, 10, 24, 12), 2)
    assert [local(t) for t in got] == ["03-29 03:00 CEST", "03-30 03:00 CEST", "10-25 03:00 CET", "10-26 03:00 CET"]


@pytest.mark.parametrize(("tz", "fall_start", "spring_start", "missing"), [
    ("Europe/Berlin", at(2026, 10, 24, 23, 30), at(2026, 3, 28, 23, 30), "03-29 02:"),
    ("America/New_York", at(2026, 10, 31, 22, 30, tz=NEW_YORK), at(2026, 3, 7, 22, 30, tz=NEW_YORK), "03-08 02:"),
])
def test_hourly_and_minutely_jobs_follow_real_time_across_both_changes(
    tz: str, fall_start: float, spring_start: float, missing: str,
) -> None:
    for expr, step, n in (("0 * * * *", 3600, 26), ("*/10 * * * *", 600, 6 * 26), ("* * * * *", 60, 60 * 6)):
        for start in (fall_start, spring_start):
            got = ticks(expr, start, n, tz)
            assert {b - a for a, b in itertools.pairwise(got)} == {step}, (expr, tz)  # none twice, none left out
    fall = ticks("0 * * * *", fall_start, 6, tz)
    assert len({local(t, ZoneInfo(tz))[:11] for t in fall}) == 5  # the repeated hour's wall time ran twice
    spring = ticks("0 * * * *", spring_start, 26, tz)
    assert not [t for t in spring if local(t, ZoneInfo(tz)).startswith(missing)]  # that hour does not exist


def test_due_counts_and_returns_the_latest_in_order() -> None:
    start = at(2026, 10, 25, 1, 0)
    fired, count = cron.due("*/30 * * * *", "Europe/Berlin", start, at(2026, 10, 25, 3, 0), 3)
    assert count == 7  # 01:00 01:30 02:00 02:30 CEST, 02:00 02:30 03:00 CET
    assert [local(t) for t in fired] == ["10-25 02:00 CET", "10-25 02:30 CET", "10-25 03:00 CET"]


def test_due_beyond_the_count_limit_still_finds_the_latest() -> None:
    start = at(2026, 1, 1)
    end = start + 30 * 86400  # a month of a minutely schedule: past COUNT_UP_TO
    fired, count = cron.due("* * * * *", "Europe/Berlin", start, end, 2)
    assert count == cron.COUNT_UP_TO and fired == [end - 60, end]


# -- every=: ticks on multiples of the interval ----------------------------------------------------------------
def _every(seconds: float, next_at: float, **kw: object) -> Schedule:
    return Schedule(id="s", queue="q", task="t", every=seconds, next_at=next_at, **kw)  # type: ignore[arg-type]


def _job(state: JobState, finished_at: float | None = None) -> Job:
    job = new_job("s@x", "t", "q", None, JobOptions(), 0, 0)
    job.state, job.finished_at = state, finished_at
    return job


def test_every_ticks_fall_on_multiples_of_the_interval() -> None:
    s = _every(60, 0)
    assert following(s, 1_000_000_030.5) == 1_000_000_080
    assert following(s, 1_000_000_020) == 1_000_000_080  # strictly after
    assert upcoming(s.model_copy(update={"next_at": 120.0}), 3) == [120.0, 180.0, 240.0]


def test_every_ticks_move_strictly_forward_whatever_the_float_rounding() -> None:
    s = _every(2.7, 0)
    for k in range(1, 2000):
        assert following(s, k * 2.7) > k * 2.7
    fired, moved = plan(_every(10, 100, last_at=100), now=100.5, previous=None)  # type: ignore[misc]
    assert fired == [] and moved.next_at == 110  # a tick at or before the last fired one never fires again


def test_a_paused_schedule_shows_the_ticks_it_would_have_if_resumed_now() -> None:
    s = _every(60, 120, paused=True)
    assert upcoming(s, 2, now=1000) == [1020, 1080]


def test_an_on_time_tick_fires_and_moves_on() -> None:
    fired, moved = plan(_every(10, 100), now=100.2, previous=None)  # type: ignore[misc]
    assert fired == [100] and moved.next_at == 110 and moved.fired == 1
    assert moved.last_at == 100 and moved.last_job == tick_id("s", 100)


def test_missed_ticks_are_skipped_unless_caught_up() -> None:
    late = _every(10, 100)
    fired, moved = plan(late, now=145, previous=None)  # type: ignore[misc]
    assert fired == [140] and moved.skipped == 4 and moved.next_at == 150  # only the latest, still in time
    hourly = _every(3600, 3600)
    fired, moved = plan(hourly, now=3600 + MISSED_AFTER + 1, previous=None)  # type: ignore[misc]
    assert fired == [] and moved.skipped == 1 and moved.next_at == 7200  # the only due tick is too late too
    fired, moved = plan(late.model_copy(update={"catch_up": 3}), now=1000, previous=None)  # type: ignore[misc]
    assert fired == [980, 990, 1000] and moved.next_at == 1010 and moved.skipped == 88
    fired, moved = plan(hourly.model_copy(update={"catch_up": 1}), now=99_999, previous=None)  # type: ignore[misc]
    assert fired == [97_200] and moved.next_at == 100_800  # catch_up=1: the latest missed one, however late


def test_overlap_policies_while_the_previous_run_goes_on() -> None:
    s = _every(10, 100, last_job="s@x")
    running, done = _job(JobState.ACTIVE), _job(JobState.COMPLETED, finished_at=95)
    fired, moved = plan(s, now=100, previous=running)  # type: ignore[misc]
    assert fired == [] and moved.skipped == 1 and moved.next_at == 110
    assert plan(s, now=100, previous=done) == ([100], plan(s, now=100, previous=None)[1])  # type: ignore[index]
    assert plan(s, now=100, previous=_job(JobState.WAITING))[0] == []  # type: ignore[index]  # waiting is unfinished
    queue = s.model_copy(update={"overlap": "queue"})
    assert plan(queue, now=100, previous=running) is None  # waits, the schedule unchanged
    slow = _every(100, 200, last_job="s@x", overlap="queue")
    fired, _ = plan(slow, now=290, previous=_job(JobState.COMPLETED, finished_at=285))  # type: ignore[misc]
    assert fired == [200]  # the held tick fires when the previous run ends, however late
    fired, _ = plan(slow, now=290, previous=done)  # type: ignore[misc]
    assert fired == []  # not held (that run ended before the tick): missed, as any tick this late
    fired, _ = plan(s.model_copy(update={"overlap": "allow"}), now=100, previous=running)  # type: ignore[misc]
    assert fired == [100]


def test_paused_or_not_due_fires_nothing() -> None:
    paused, early = _every(10, 100, paused=True), _every(10, 100)
    assert plan(paused, now=500, previous=None) == ([], paused)
    assert plan(early, now=99, previous=None) == ([], early)


def test_tick_ids_are_the_schedule_and_the_utc_time() -> None:
    assert tick_id("nightly", at(2026, 12, 6, 3, 0, tz=timezone.utc)) == "nightly@2026-12-06T03:00:00Z"
    assert tick_id("fast", 1.5) == "fast@1970-01-01T00:00:01.500Z"
    assert tick_id("dst", at(2026, 10, 25, 2, 30, fold=0)) != tick_id("dst", at(2026, 10, 25, 2, 30, fold=1))


def test_cron_text_is_normalised_and_aliases_spelled_out() -> None:
    assert cron.check("  0   3 * *  mon-fri ") == "0 3 * * mon-fri"
    assert (cron.check("@daily"), cron.check("@Hourly"), cron.check("@weekly")) == (
        "0 0 * * *", "0 * * * *", "0 0 * * 0")
    assert cron.next_after(cron.check("0 3 L * *"), "UTC", at(2026, 2, 1, tz=timezone.utc)) == at(
        2026, 2, 28, 3, tz=timezone.utc)


def test_a_weekly_cleanup_fires_every_sunday_at_four_local_time() -> None:
    s = Schedule(id="cleanup", queue="q", task="t", cron="0 4 * * 0", tz="Europe/Berlin", next_at=0)
    s.next_at = following(s, at(2026, 10, 14))
    got = [datetime.fromtimestamp(t, BERLIN) for t in upcoming(s, 5)]
    assert [(d.strftime("%a %H:%M"), d.day) for d in got] == [
        ("Sun 04:00", 18), ("Sun 04:00", 25), ("Sun 04:00", 1), ("Sun 04:00", 8), ("Sun 04:00", 15)]
    assert got[2] - got[1] == timedelta(days=7) and got[2].timestamp() - got[1].timestamp() == 7 * 86400


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "61 * * * *"}, "invalid cron expression"),
    ({"cron": "0 3 * *"}, "five fields"),
    ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
    ({"every": 0.5}, "at least 1 second"),
    ({"every": float("inf")}, "at least 1 second"),
    ({"every": "5"}, "number of seconds or a timedelta"),
    ({}, "either cron="),
    ({"cron": "* * * * *", "every": timedelta(seconds=5)}, "not both"),
])
def test_bad_timing_is_refused_with_what_to_write(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(jobkit.ConfigError, match=message):
        cron.timing(kwargs.get("cron"), kwargs.get("every"), str(kwargs.get("tz", "UTC")))  # type: ignore[arg-type]
    if kwargs:
        with pytest.raises(jobkit.ConfigError, match=message):
            jobkit.task(queue="q", name="policy.bad", **kwargs)(_noop)  # type: ignore[call-overload]


async def _noop(ctx: jobkit.Context) -> None:
    return None


class _Needs(BaseModel):
    region: str


async def _needs_region(ctx: jobkit.Context, payload: _Needs) -> None:
    return None


def test_a_task_schedule_needs_a_payload_that_can_be_empty() -> None:
    with pytest.raises(jobkit.ConfigError, match="give every payload field a default"):
        jobkit.task(name="policy.needs", every=60)(_needs_region)
    assert jobkit.task(name="policy.free", every=60)(_noop).schedule == TaskSchedule(None, 60.0, "UTC")
