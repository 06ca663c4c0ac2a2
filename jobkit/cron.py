"""Cron expressions: validation and fire times in a time zone, through croniter, behind this small interface.

Fire times are UTC epoch seconds. Around DST changes we follow cron's own rule: a job at a fixed hour runs once
when the clock falls back (the repeated wall time fires the first time only) and at the change when it springs
forward over it; a job for every hour (`*` in the hour field) keeps its real-time cadence.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

__all__ = ["check", "fire_times", "next_after", "utc_text", "zone"]

_STEP = 1e-3  # seconds: croniter's previous/next exclude their start, so an inclusive bound starts this far out


@lru_cache(maxsize=64)
def zone(tz: str) -> ZoneInfo:
    """The time zone `tz` (an IANA name such as "Europe/Berlin"), or a ConfigError."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'") from exc


def check(expr: str) -> str:
    """The expression, stripped, if croniter accepts it; else a ConfigError saying the form."""
    from croniter import croniter

    text = " ".join(expr.split())
    if not text or not croniter.is_valid(text):
        raise ConfigError(f"invalid cron expression {expr!r}: use five fields, 'minute hour day month weekday',"
                          " e.g. '0 3 * * *' for 03:00 every day")
    return text


def _fixed_hour(expr: str) -> bool:
    return expr.split()[1] != "*"


def _repeated(at: float, tz: ZoneInfo) -> bool:
    """True when `at` shows a wall time the clock already showed an hour earlier (the fall-back hour)."""
    return datetime.fromtimestamp(at, tz).fold == 1


def next_after(expr: str, tz: str, after: float) -> float:
    """The first fire time strictly after `after`."""
    from croniter import croniter

    zi = zone(tz)
    it = croniter(expr, datetime.fromtimestamp(after, zi))
    skip_repeats = _fixed_hour(expr)
    while True:
        at = float(it.get_next(float))
        if not (skip_repeats and _repeated(at, zi)):
            return at


def fire_times(expr: str, tz: str, start: float, end: float, last: int) -> list[float]:
    """The fire times in [start, end], at most the `last` latest of them, oldest first."""
    from croniter import croniter

    zi = zone(tz)
    it = croniter(expr, datetime.fromtimestamp(end + _STEP, zi))
    skip_repeats = _fixed_hour(expr)
    found: list[float] = []
    while len(found) < last:
        at = float(it.get_prev(float))
        if at < start:
            break
        if not (skip_repeats and _repeated(at, zi)):
            found.append(at)
    return found[::-1]


def utc_text(at: float) -> str:
    """`at` as an ISO 8601 UTC time, to the second (to the millisecond when it has a fraction)."""
    spec = "seconds" if at == int(at) else "milliseconds"
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec=spec).replace("+00:00", "Z")
