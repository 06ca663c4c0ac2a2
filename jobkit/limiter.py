"""Fixed-window rate-limit arithmetic shared by the local backends (Redis does the same in Lua)."""

from __future__ import annotations

from .models import RateLimit

__all__ = ["grant"]


def grant(rate: RateLimit, window_start: float, used: int, want: int, now: float) -> tuple[float, int, int, float]:
    """How many of `want` starts the window allows now.

    Returns (window_start, used, granted, retry_in): the window's state after granting, and when a
    refused caller may try again (0 when something was granted).
    """
    if now >= window_start + rate.per:
        window_start, used = now, 0
    granted = max(0, min(want, rate.limit - used))
    retry_in = 0.0 if granted else window_start + rate.per - now
    return window_start, used + granted, granted, retry_in
