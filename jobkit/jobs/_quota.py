"""Quotas shared by every worker on a backend: rates (requests and units per minute) and money budgets.

Policy over the backend's atomic primitives (`Backend.take`, `restrict`, `reserve`, `settle`): how long to wait,
how to spread a minute's allowance, what a server's "N left, reset in S" means. Built-in jobs that call rate-limited
services (AI providers, mail servers) share it; the backend only does the arithmetic it is given.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

from ..backends import Ask, Backend, Spend

__all__ = ["MARGIN", "Budget", "SharedRate"]

SLICES = 6  # a minute's allowance is spread over this many slices, so a provider that enforces it per second is spared
JITTER = 0.02  # seconds of random extra sleep, so waiting workers do not all ask again at the same instant
MARGIN = 0.5  # seconds a grant outlives its window: requests reach the provider a few ms apart from when they were
# granted, so this keeps the provider's own count under the limit in every one of its windows (0.8% of 60 s)


@dataclass
class SharedRate:
    """At most `requests` calls and `units` (tokens, say) per `per` seconds, across every worker on the backend.

    Counters live under `queue` (one hash slot on a Redis Cluster) and `name`.
    """

    backend: Backend
    queue: str
    name: str
    requests: int
    units: int | None = None
    per: float = 60.0

    def asks(self, units: float, calls: int = 1) -> list[Ask]:
        slice_limit = math.ceil(self.requests / SLICES)
        asks = [Ask(f"{self.name}:requests", calls, self.requests, self.per + MARGIN)]
        if slice_limit < self.requests:
            asks.append(Ask(f"{self.name}:burst", calls, slice_limit, self.per / SLICES))
        if self.units is not None:
            asks.append(Ask(f"{self.name}:units", min(units * calls, self.units), self.units, self.per + MARGIN))
        return asks

    def most_at_once(self, units: float) -> int:
        """The most calls one `try_acquire` should ask for: a quarter of a slice's requests (and of its share of
        the units), so that slots one worker takes ahead leave most of a slice to the others."""
        most = max(1, math.ceil(self.requests / SLICES) // 4)
        if self.units is not None and units > 0:
            most = min(most, max(1, math.floor(self.units / SLICES / 4 / units)))
        return most

    async def acquire(self, units: float = 0.0) -> float:
        """Wait until one call of `units` is allowed, and record it; returns the seconds waited. A call of more
        units than the per-minute limit waits for a whole empty minute (it can never fit otherwise)."""
        started = time.monotonic()
        asks = self.asks(units)
        while True:
            wait = await self.backend.take(self.queue, asks, time.time())
            if wait <= 0:
                return time.monotonic() - started
            await asyncio.sleep(wait + random.uniform(0, JITTER))

    async def try_acquire(self, units: float = 0.0, calls: int = 1) -> bool:
        """Record `calls` calls of `units` each if they are allowed now, all or none; never waits."""
        return await self.backend.take(self.queue, self.asks(units, calls), time.time()) <= 0

    async def pause(self, seconds: float) -> None:
        """Nobody calls for `seconds` (a 429 with Retry-After)."""
        now = time.time()
        await self.backend.restrict(self.queue, f"{self.name}:requests", 0, self.requests, now + seconds, now)

    async def observe(self, requests_left: float | None, requests_reset: float | None, units_left: float | None,
                      units_reset: float | None) -> None:
        """A server said how much it still allows and when that resets: never ask for more than that meanwhile."""
        now = time.time()
        if requests_left is not None and requests_reset:
            await self.backend.restrict(self.queue, f"{self.name}:requests", requests_left, self.requests,
                                        now + requests_reset, now)
        if self.units is not None and units_left is not None and units_reset:
            await self.backend.restrict(self.queue, f"{self.name}:units", units_left, self.units, now + units_reset,
                                        now)


@dataclass
class Budget:
    """Money reserved before it is spent: `reserve` the worst case, `settle` to the actual cost after."""

    backend: Backend
    queue: str
    key: str
    limit: float | None

    async def reserve(self, amount: float, spare: float = 0.0) -> tuple[bool, Spend]:
        """Reserve `amount` if the room left after it is at least `spare`, atomically."""
        limit = None if self.limit is None else self.limit - spare
        return await self.backend.reserve(self.queue, self.key, amount, limit)

    async def settle(self, reserved: float, actual: float) -> Spend:
        return await self.backend.settle(self.queue, self.key, reserved, actual)

    async def totals(self) -> Spend:
        return (await self.backend.reserve(self.queue, self.key, 0.0, None))[1]

    def can_ever_fit(self, amount: float, spend: Spend) -> bool:
        """False when even with every open reservation settled at zero, `amount` would pass the limit."""
        return self.limit is None or spend.spent + amount <= self.limit
