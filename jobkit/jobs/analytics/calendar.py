"""Time partitions and buckets in a time zone: hours, days, ISO weeks (from Monday) and months of local time.

A day is from local midnight to the next, so it lasts 23 or 25 hours across a DST change; an hour is a real
hour, so the repeated hour of an autumn change comes twice (with two offsets). Every boundary is an aware
datetime; arithmetic on days and months is done on local dates, on hours in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = ["UNITS", "Unit", "aligned", "cuts", "floor"]

Unit = Literal["hour", "day", "week", "month"]
UNITS: tuple[Unit, ...] = ("hour", "day", "week", "month")
_HOUR = dt.timedelta(hours=1)


def _midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz)


def floor(t: dt.datetime, unit: Unit, tz: ZoneInfo) -> dt.datetime:
    """The start of the `unit` of local time that holds the instant `t` (aware)."""
    local = t.astimezone(tz)
    if unit == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if unit == "week":
        day -= dt.timedelta(days=day.weekday())
    elif unit == "month":
        day = day.replace(day=1)
    return _midnight(day, tz)


def _next(start: dt.datetime, unit: Unit, tz: ZoneInfo) -> dt.datetime:
    """The start of the unit after the one that starts at `start`."""
    if unit == "hour":
        return (start.astimezone(dt.timezone.utc) + _HOUR).astimezone(tz)
    day = start.astimezone(tz).date()
    if unit == "day":
        return _midnight(day + dt.timedelta(days=1), tz)
    if unit == "week":
        return _midnight(day + dt.timedelta(days=7), tz)
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return _midnight(dt.date(year, month, 1), tz)


def aligned(t: dt.datetime, unit: Unit, tz: ZoneInfo) -> bool:
    """Whether the instant `t` starts a `unit` of local time."""
    return floor(t, unit, tz).astimezone(dt.timezone.utc) == t.astimezone(dt.timezone.utc)


def cuts(start: dt.datetime, end: dt.datetime, unit: Unit, tz: ZoneInfo, limit: int) -> list[dt.datetime]:
    """`start`, every start of a `unit` strictly inside (start, end), and `end`: the edges of the pieces that
    cut [start, end) along `unit` (the first and last may be partial). ValueError past `limit` pieces."""
    edges = [start.astimezone(tz)]
    edge = _next(floor(start, unit, tz), unit, tz)
    last = end.astimezone(dt.timezone.utc)  # compared in UTC: local times of one zone compare by the wall clock
    while edge.astimezone(dt.timezone.utc) < last:
        edges.append(edge)
        if len(edges) > limit:
            raise ValueError(f"the range holds more than {limit:,} {unit}s")
        edge = _next(edge, unit, tz)
    edges.append(end.astimezone(tz))
    return edges
