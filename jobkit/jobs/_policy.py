"""Retry defaults of the built-in jobs, as our users run them in production: 3 attempts, 5 s then 15 s apart."""

from __future__ import annotations

from .. import Backoff

__all__ = ["ATTEMPTS", "BACKOFF"]

ATTEMPTS = 3
BACKOFF = Backoff.exponential(5.0, factor=3.0, max_delay=15.0)  # 5 s before the 2nd attempt, 15 s before the 3rd
