"""The next call's reservation and rate slot, taken while the current call is in flight: a steady stream of calls
finds both ready, and sends each call without a backend round trip before it (after the wait for an answer, that
round trip pays the wake-up of an idle connection, the call path's largest cost)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ...backends import Spend
from .._quota import MARGIN, Budget, SharedRate

__all__ = ["FRESH", "HEADROOM", "HIDES", "QUICK_ANSWER", "Ahead"]

FRESH = MARGIN / 2  # seconds a prefetched rate slot stays usable. A grant outlives its window by MARGIN, so a call
# sent within this of its slot's grant still falls inside the window the backend counted; half the margin is left
# for the trip to the provider. An older slot is dropped: one request under the rate, never over.
QUICK_ANSWER = FRESH / 2  # slots are prefetched only while the last call answered within this, else they would go stale
HIDES = 4  # a prefetch is taken only while calls last this many times its round trips (see Ahead.worth_it)
HEADROOM = 1.1  # a prefetch covers the largest of the recent calls and this much more, so the next one fits
RECENT = 8  # how many recent calls size a prefetch
EPSILON = 1e-9


@dataclass
class Held:
    """A prefetch: `amount` reserved in the budget (0: the budget refused it) and, when `granted` is set, a rate
    slot for `units`."""

    amount: float
    units: float
    granted: float | None  # clock time before the slot was asked for (so its age is never understated)
    epoch: int  # the rate's epoch then: a restriction since makes the slot unusable


class Ahead:
    """One prefetch at a time for a Caller, taken as a call is sent (its trips start once the request is written),
    only when it costs no waiting, the budget has room to spare, and calls last long enough to hide it (`worth_it`).

    - Money: a real reservation (`Budget.reserve`), made before the call that uses it; a call whose worst case does
      not fit in it reserves its own and the prefetch is released (settled at 0). None is taken when the budget's
      room after it would be under `concurrency` worst cases, so a nearly spent budget behaves as without it.
    - Rate: a slot is asked once and kept only if granted at once; it is used while younger than FRESH and covering
      the call's units, and dropped when the provider restricts the rate (a 429, or few requests left).
    """

    def __init__(self, budget: Budget, rate: SharedRate, concurrency: int, freed: asyncio.Event,
                 after_writes: Callable[[], Awaitable[None]], *, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`freed` is set when a release gives money back; `after_writes` is awaited before any background trip, so
        that it goes after the request being sent."""
        self.budget, self.rate, self.concurrency, self.freed, self.clock = budget, rate, concurrency, freed, clock
        self.after_writes = after_writes
        self.enabled = enabled
        self.held: Held | None = None
        self.fetching: asyncio.Task[None] | None = None
        self.releasing: set[asyncio.Task[None]] = set()
        self.sizes: deque[tuple[float, float]] = deque(maxlen=RECENT)  # recent calls' (worst case, units)
        self.spend: Spend | None = None  # the budget's totals as last seen
        self.last_call: float | None = None  # seconds the last call took to answer
        self.trip: float | None = None  # seconds the last reservation (and slot) took to get, ahead or on the path
        self.rate_low = False  # the provider said the rate is low: no slots until an answer says otherwise
        self.epoch = 0

    # -- what the Caller tells ---------------------------------------------------------------------------------------
    def seen(self, spend: Spend) -> None:
        self.spend = spend

    def tripped(self, seconds: float) -> None:
        """A call reserved (and took its slot) on its path in `seconds`."""
        self.trip = seconds

    def worth_it(self) -> bool:
        """A prefetch pays when the call it hides behind lasts a few times its round trips. With answers nearly as
        fast as the backend (a loopback server), it would only compete with the call for the backend (SQLite's one
        thread) and the interpreter, and the next call would wait for it anyway: then calls reserve on their path."""
        return self.last_call is None or self.trip is None or self.last_call >= HIDES * self.trip

    def answered(self, sent_at: float) -> None:
        """A call sent at `sent_at` (what `start` returned) answered, or failed, now."""
        self.last_call = self.clock() - sent_at

    def rate_told(self, low: bool) -> None:
        """The provider restricted the rate (`low`), or answered without doing so: a held slot is never used after a
        restriction, since the backend counted it before the restriction and the provider will count it after."""
        if low:
            self.epoch += 1
        self.rate_low = low

    # -- prefetch, claim, release ------------------------------------------------------------------------------------
    def start(self, worst: float, units: float) -> float:
        """A call of `worst` cost and `units` is being sent: prefetch for the next one, unless one is held or under
        way, or the budget has too little room. Returns the time it was sent, for `answered`."""
        self.sizes.append((worst, units))
        if self.enabled and self.held is None and self.fetching is None and self.worth_it():
            amount = max(w for w, _ in self.sizes) * HEADROOM
            if amount > 0 and self._room(amount, self.concurrency + 1):
                slot = not self.rate_low and self.last_call is not None and self.last_call < QUICK_ANSWER
                needs = math.ceil(max(u for _, u in self.sizes) * HEADROOM)
                self.fetching = asyncio.ensure_future(self._fetch(amount, needs, slot))
        return self.clock()

    async def _fetch(self, amount: float, units: float, slot: bool) -> None:
        await self.after_writes()
        epoch, asked = self.epoch, self.clock()
        taken: bool | BaseException = False
        if slot:  # both at once, as on the call path
            reserved, taken = await asyncio.gather(self.budget.reserve(amount), self.rate.try_acquire(units),
                                                   return_exceptions=True)
        else:
            (reserved,) = await asyncio.gather(self.budget.reserve(amount), return_exceptions=True)
        self.trip = self.clock() - asked
        if isinstance(reserved, BaseException):
            raise reserved
        granted, self.spend = reserved
        if granted and (isinstance(taken, BaseException) or not self._room(amount, self.concurrency)):
            await self._release(amount)  # others took the room meanwhile, or the take failed: give it back
            granted = False
        if isinstance(taken, BaseException):
            raise taken
        if granted or taken:
            self.held = Held(amount if granted else 0.0, units, asked if taken else None, epoch)

    async def landed(self) -> None:
        """Wait for a prefetch under way, if any (what it raised is for `claim` or `close` to raise)."""
        if self.fetching is not None:
            await asyncio.wait([self.fetching])

    def _room(self, amount: float, calls: int) -> bool:
        """Whether the budget, as last seen, has room for `calls` reservations of `amount` (no limit: always)."""
        if self.budget.limit is None:
            return True
        s = self.spend
        return s is not None and self.budget.limit - s.spent - s.reserved >= calls * amount - EPSILON

    async def _settled_fetch(self) -> None:
        """Wait for a prefetch under way (one round trip or two, already sent), and raise what it raised."""
        task = self.fetching
        if task is not None:
            try:
                await asyncio.shield(task)
            finally:
                if task.done():
                    self.fetching = None

    async def claim(self, worst: float, units: float) -> tuple[float, bool]:
        """What a call of `worst` cost and `units` may use: the amount prefetched for it (0: reserve now), and
        whether it holds a fresh rate slot (False: take one now). A reservation it cannot use is released."""
        if not self.enabled:
            return 0.0, False
        await self._settled_fetch()
        held, self.held = self.held, None
        if held is None:
            return 0.0, False
        amount = held.amount
        if amount < worst - EPSILON:
            if amount > 0:
                self._release_later(amount)
            amount = 0.0
        fresh = held.granted is not None and self.clock() - held.granted < FRESH
        slot = fresh and held.epoch == self.epoch and (self.rate.units is None or held.units >= units)
        return amount, slot

    async def give_back(self) -> bool:
        """A reservation was refused: release an unused prefetch (it may be the room needed) and say whether
        anything was, or was already being, released, so the caller asks again at once."""
        if not self.enabled:
            return False
        await self._settled_fetch()
        under_way = list(self.releasing)
        held, self.held = self.held, None
        released = held.amount if held is not None else 0.0
        if released > 0:
            await self._release(released)
        if under_way:
            await asyncio.gather(*under_way)
        return released > 0 or bool(under_way)

    async def close(self) -> None:
        """No more prefetches: wait for one under way, release what is held, and for every release to land."""
        self.enabled = False
        try:
            await self._settled_fetch()
        finally:
            held, self.held = self.held, None
            if held is not None and held.amount > 0:
                await self._release(held.amount)
            while self.releasing:
                await asyncio.gather(*list(self.releasing))

    async def _release(self, amount: float) -> None:
        self.spend = await self.budget.settle(amount, 0.0)
        self.freed.set()

    async def _release_after_writes(self, amount: float) -> None:
        await self.after_writes()
        await self._release(amount)

    def _release_later(self, amount: float) -> None:
        task = asyncio.ensure_future(self._release_after_writes(amount))
        self.releasing.add(task)
        task.add_done_callback(self.releasing.discard)
