"""Cron expressions: validation and fire times in a time zone, through cronsim, behind this small interface.

Fire times are UTC epoch seconds. Across DST changes we keep Debian cron's rule, which cronsim implements: a job
at a fixed hour runs once a day, at the change when the clock springs forward over its time and only the first
time when the clock falls back over it; a job whose hour field starts with `*` (every hour, every 2 hours...)
follows real time, so it runs in both passes of a repeated hour and not in a skipped one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

__all__ = ["ALIASES", "COUNT_UP_TO", "check", "due", "next_after", "timing", "utc_text", "zone"]

ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
COUNT_UP_TO = 10_000  # fire times counted one by one at most (a long outage of a minutely schedule)


@lru_cache(maxsize=64)
def zone(tz: str) -> ZoneInfo:
    """The time zone `tz` (an IANA name such as "Europe/Berlin"), or a ConfigError."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ConfigError(f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'") from exc


def check(expr: str) -> str:
    """The expression with its blanks normalised (an alias such as "@daily" spelled out), if it is valid cron;
    else a ConfigError saying the form."""
    from cronsim import CronSim, CronSimError

    text = " ".join(expr.split()) if isinstance(expr, str) else ""
    text = ALIASES.get(text.lower(), text)
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except (CronSimError, ValueError, IndexError) as exc:
        raise ConfigError(f"invalid cron expression {expr!r} ({exc}): use five fields, 'minute hour day month"
                          " weekday', e.g. '0 3 * * *' for 03:00 every day") from None
    return text


def timing(cron_expr: str | None, every: float | timedelta | None, tz: str) -> tuple[str | None, float | None]:
    """A schedule's timing checked: the normalised cron text or the interval in seconds; else a ConfigError
    saying what to write instead."""
    if (cron_expr is None) == (every is None):
        raise ConfigError("give a schedule either cron='minute hour day month weekday' or every=seconds/timedelta,"
                          " not both or neither")
    zone(tz)
    if cron_expr is not None:
        return check(cron_expr), None
    if isinstance(every, bool) or not isinstance(every, int | float | timedelta):
        raise ConfigError(f"every is a number of seconds or a timedelta, not {every!r}")
    seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
    if not math.isfinite(seconds) or seconds < 1:
        raise ConfigError(f"every must be at least 1 second, not {every!r}")
    return None, seconds


def _times(expr: str, tz: str, after: float) -> Iterator[float]:
    """Fire times strictly after `after`, in order."""
    from cronsim import CronSim

    for at in CronSim(expr, datetime.fromtimestamp(after, zone(tz))):
        yield at.timestamp()


def next_after(expr: str, tz: str, after: float) -> float:
    """The first fire time strictly after `after`."""
    return next(_times(expr, tz, after))


def due(expr: str, tz: str, start: float, end: float, last: int) -> tuple[list[float], int]:
    """The latest `last` fire times in [start, end], oldest first, and how many fall in that span (counted up to
    COUNT_UP_TO; past that, the latest are found in a window that widens back from `end`)."""
    found: list[float] = []
    for at in _between(expr, tz, start, end):
        if len(found) == COUNT_UP_TO:
            break
        found.append(at)
    else:
        return found[max(len(found) - last, 0):], len(found)
    span = 3600.0
    while True:
        lo = max(start, end - span)
        window = list(_between(expr, tz, lo, end))
        if len(window) >= last or lo == start:
            return window[max(len(window) - last, 0):], COUNT_UP_TO
        span *= 4


def _between(expr: str, tz: str, start: float, end: float) -> Iterator[float]:
    """Fire times in [start, end], in order."""
    for at in _times(expr, tz, start - 1.0):  # cron times are whole minutes: a second early includes `start`
        if at > end:
            return
        yield at


def utc_text(at: float) -> str:
    """`at` as an ISO 8601 UTC time, to the second (to the millisecond when it has a fraction)."""
    spec = "seconds" if at == int(at) else "milliseconds"
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec=spec).replace("+00:00", "Z")
