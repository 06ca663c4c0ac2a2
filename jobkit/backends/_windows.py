"""Sliding-window counter arithmetic shared by the local backends (Redis does the same in Lua)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["over_by", "wait_until_fits"]


def wait_until_fits(lapses: Iterable[tuple[float, float]], used: float, amount: float, limit: float,
                    now: float) -> float:
    """Seconds until `amount` more fits under `limit`, as grants lapse: `lapses` are (lapses_at, amount) in
    time order, `used` their total. 0.0 when it fits now."""
    excess = used + amount - limit
    if excess <= 0:
        return 0.0
    for at, granted in lapses:
        excess -= granted
        if excess <= 0:
            return max(0.0, at - now)
    return 0.0  # every grant lapses first: `amount` <= `limit` was checked


def over_by(used: float, remaining: float, limit: float) -> float:
    """What `restrict` records: the part of `limit` less `used` beyond `remaining`, or 0."""
    return max(0.0, limit - used - remaining)
