"""The next calls' reservations and rate slots, taken ahead in one backend step: a steady stream of calls finds them
ready, and sends most calls without a backend round trip before them (after the wait for an answer, that round trip
pays the wake-up of an idle connection; with answers as fast as the backend, it is most of the call path)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ...backends import Spend
from .._quota import MARGIN, Budget, SharedRate

__all__ = ["FRESH", "HEADROOM", "HIDES", "MOST", "QUICK_ANSWER", "Ahead"]

FRESH = MARGIN / 2  # seconds a prefetched rate slot stays usable. A grant outlives its window by MARGIN, so a call
# sent within this of its slot's grant still falls inside the window the backend counted; half the margin is left
# for the trip to the provider. An older slot is dropped: one request under the rate, never over.
QUICK_ANSWER = FRESH / 2  # slots are prefetched only while the last call answered within this, else they would go stale
HIDES = 4  # a prefetch goes in the background only while calls last this many times its round trips (`worth_it`)
HEADROOM = 1.1  # a prefetch covers the largest of the recent calls and this much more, so the next one fits
MOST = 32  # the most calls one step takes for: its trip falls on 1 call in 32, fewer than p95 leaves out
RECENT = 8  # how many recent calls size a prefetch
EPSILON = 1e-9


@dataclass
class Held:
    """What steps took ahead, and is left: `count` reservations of `amount` each in the budget, and `slots` rate
    slots of `units` each, granted together at `granted` in the rate's `epoch` (a restriction since makes them
    unusable). Each part is taken again when it runs out."""

    amount: float = 0.0
    count: int = 0
    units: float = 0.0
    slots: int = 0
    granted: float = 0.0  # clock time before the slots were asked for (so their age is never understated)
    epoch: int = 0


class Ahead:
    """Reservations and rate slots for a Caller's next calls, several of each taken in one step (`_step` says how
    many), only when it costs no waiting and the budget has room to spare. A call takes one of each (`claim`). When a
    part runs out, the step that takes more goes in the background as a call is sent (its trips start once the
    request is written) while calls last long enough to hide it (`worth_it`); with answers too quick for that, on
    the path of the call that found it missing, with this caller's deferred settlements: one call in n pays a trip.

    - Money: real reservations (`Budget.reserve`), made before the calls that use them; a call whose worst case does
      not fit in one reserves its own and the rest are released (settled at 0). A step of n is granted only while
      the budget's room after it stays at least n - 1 + `concurrency` worst cases, so near the limit n shrinks to
      one, then to none, as without a prefetch; this caller never holds more than about half the room it saw.
    - Rate: slots are asked once and kept only if granted at once, as many as are sent within FRESH at the last
      answer time (half, for the gaps); each is used while younger than FRESH and covering the call's units, and
      all are dropped when the provider restricts the rate (a 429, or few requests left).
    - With no call in flight for `idle_after` seconds (FRESH), or at `close`: what is held is released and the
      deferred settlements are sent, so that other workers sharing the budget find the room.
    """

    def __init__(self, budget: Budget, rate: SharedRate, concurrency: int, freed: asyncio.Event,
                 after_writes: Callable[[], Awaitable[None]], send_owed: Callable[[], object] = lambda: None, *,
                 enabled: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        """`freed` is set when a release gives money back; `after_writes` is awaited before any background trip, so
        that it goes after the request being sent; `send_owed` sends the caller's deferred settlements, called
        before each step of ours so that they join it (one transaction on SQLite), and when idle."""
        self.budget, self.rate, self.concurrency, self.freed, self.clock = budget, rate, concurrency, freed, clock
        self.after_writes, self.send_owed = after_writes, send_owed
        self.enabled = enabled
        self.held = Held()
        self.refused: float | None = None  # when the rate last refused slots asked ahead
        self.fetching: asyncio.Task[None] | None = None
        self.releasing: set[asyncio.Task[None]] = set()
        self.sizes: deque[tuple[float, float]] = deque(maxlen=RECENT)  # recent calls' (worst case, units)
        self.spend: Spend | None = None  # the budget's totals as last seen
        self.last_call: float | None = None  # seconds the last call took to answer
        self.trip: float | None = None  # seconds the last reservation (and slot) took to get, ahead or on the path
        self.rate_low = False  # the provider said the rate is low: no slots until an answer says otherwise
        self.epoch = 0
        self.in_flight = 0
        self.idle_after = FRESH  # seconds with no call in flight before what is held goes back
        self._idle: asyncio.TimerHandle | None = None

    # -- what the Caller tells ---------------------------------------------------------------------------------------
    def seen(self, spend: Spend) -> None:
        self.spend = spend

    def tripped(self, seconds: float) -> None:
        """A call reserved (and took its slot) on its path in `seconds`."""
        self.trip = seconds

    def worth_it(self) -> bool:
        """A prefetch in the background pays when the call it hides behind lasts a few times its round trips. With
        answers nearly as fast as the backend (a loopback server), it would only compete with the call for the
        backend (SQLite's one thread) and the interpreter, and the next call would wait for it anyway: then the
        call that finds nothing held takes the next calls' share on its path."""
        return self.last_call is None or self.trip is None or self.last_call >= HIDES * self.trip

    def answered(self, sent_at: float) -> None:
        """A call sent at `sent_at` (what `start` returned) answered, or failed, now."""
        self.last_call = self.clock() - sent_at
        self.in_flight -= 1
        if self.in_flight == 0 and self.enabled and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(self.idle_after, self._on_idle)

    def rate_told(self, low: bool) -> None:
        """The provider restricted the rate (`low`), or answered without doing so: a held slot is never used after a
        restriction, since the backend counted it before the restriction and the provider will count it after."""
        if low:
            self.epoch += 1
        self.rate_low = low

    # -- take ahead, claim, release ----------------------------------------------------------------------------------
    def start(self, worst: float, units: float) -> float:
        """A call of `worst` cost and `units` is being sent: take ahead for the next ones in the background, if what
        is held ran out, nothing is under way, and it would be hidden. Returns the time it was sent, for `answered`."""
        self.sizes.append((worst, units))
        self.in_flight += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.enabled and self.fetching is None and self.worth_it():
            step = self._step()
            if step[0] or step[1]:
                self.fetching = asyncio.ensure_future(self._prefetch(*step))
        return self.clock()

    def _step(self, worst: float = 0.0, units: float = 0.0) -> tuple[int, int, float, float]:
        """The next step: how many reservations and how many slots it takes (0: none of them), each reservation's
        amount and each slot's units; each covers the recent calls and one of `worst` and `units` (the call asking,
        when on its path). As many calls as are sent within FRESH at the last answer time, halved for the gaps."""
        amount = max([worst, *(w for w, _ in self.sizes)]) * HEADROOM
        units = math.ceil(max([units, *(u for _, u in self.sizes)]) * HEADROOM)
        n = 1 if self.last_call is None else min(MOST, max(1, int(FRESH / (2 * max(self.last_call, EPSILON)))))
        slots = 0
        if (not self.held.slots and not self.rate_low and self.last_call is not None and self.last_call < QUICK_ANSWER
                and (self.refused is None or self.clock() - self.refused >= FRESH)):
            slots = min(n, self.rate.most_at_once(units))
        money = 0
        if not self.held.count and amount > 0:
            money = n
            if self.budget.limit is not None:  # room after the step >= (money - 1 + concurrency) amounts
                s = self.spend
                room = -1.0 if s is None else self.budget.limit - s.spent - s.reserved
                money = max(0, min(n, math.floor((room / amount - self.concurrency + 1) / 2 + EPSILON)))
        return money, slots, amount, units

    async def _prefetch(self, money: int, slots: int, amount: float, units: float) -> None:
        """In the background: the step after the request being sent."""
        await self.after_writes()
        await self._fetch(money, slots, amount, units)

    async def _fetch(self, money: int, slots: int, amount: float, units: float) -> None:
        """One step: `money` reservations of `amount` (granted only while the room after them stays at least money
        - 1 + concurrency of them) and `slots` slots of `units`, with the deferred settlements."""
        self.send_owed()
        epoch, asked = self.epoch, self.clock()
        asks: list[Awaitable[object]] = []
        if money:
            asks.append(self.budget.reserve(money * amount, spare=(money - 1 + self.concurrency) * amount))
        if slots:
            asks.append(self.rate.try_acquire(units, calls=slots))
        done = await asyncio.gather(*asks, return_exceptions=True)  # at once, as on the call path
        self.trip = self.clock() - asked
        reserved, taken = (done[0] if money else None), (done[-1] if slots else False)
        failed = [d for d in done if isinstance(d, BaseException)]
        if isinstance(reserved, tuple):
            granted, self.spend = reserved
            if granted and failed:
                await self._release(money * amount)  # the take failed: give it back
            elif granted:
                self.held.amount, self.held.count = amount, money
        if failed:
            raise failed[0]
        if taken:
            self.held.units, self.held.slots, self.held.granted, self.held.epoch = units, slots, asked, epoch
        elif slots:
            self.refused = asked  # the rate is busy: no slots are asked ahead for a while, each call takes its own

    async def landed(self) -> None:
        """Wait for a step under way, if any (what it raised is for `claim` or `close` to raise)."""
        if self.fetching is not None:
            await asyncio.wait([self.fetching])

    async def _settled_fetch(self) -> None:
        """Wait for a step under way (one round trip or two, already sent), and raise what it raised."""
        task = self.fetching
        if task is not None:
            try:
                await asyncio.shield(task)
            finally:
                if task.done() and self.fetching is task:
                    self.fetching = None

    async def claim(self, worst: float, units: float) -> tuple[float, float | None]:
        """What a call of `worst` cost and `units` may use: an amount reserved ahead for it (0: reserve now), and
        when the fresh rate slot it holds was granted (None: take one now; see `fresh`). With answers too quick for
        a prefetch, a call that finds a part missing takes it on its path for the next calls too, in one step.
        Reservations it cannot use are released."""
        if not self.enabled:
            return 0.0, None
        await self._settled_fetch()
        amount, granted = self._take(worst, units, True, True)
        if not (amount and granted is not None) and self.fetching is None and not self.worth_it():
            money, slots, each, need = self._step(worst, units)
            if max(money, slots) > 1:  # one alone is what the call takes for itself anyway
                self.fetching = asyncio.ensure_future(self._fetch(money, slots, each, need))
                await self._settled_fetch()
                more, also = self._take(worst, units, not amount, granted is None)
                amount, granted = amount or more, granted if granted is not None else also
        return amount, granted

    def fresh(self, granted: float) -> bool:
        """Whether a slot granted at `granted` may still be used (a call sends its request right after)."""
        return self.clock() - granted < FRESH

    def _take(self, worst: float, units: float, money: bool, slot: bool) -> tuple[float, float | None]:
        """One reservation (if `money`) and one slot (if `slot`, with when it was granted) from what is held, if
        they fit the call."""
        held, amount, granted = self.held, 0.0, None
        if money and held.count and held.amount >= worst - EPSILON:
            amount, held.count = held.amount, held.count - 1
        elif money and held.count:  # the next calls are larger than these: give them all back
            self._release_later(held.count * held.amount)
            held.count = 0
        if slot and held.slots:
            if self.fresh(held.granted) and held.epoch == self.epoch and (self.rate.units is None
                                                                         or held.units >= units):
                granted, held.slots = held.granted, held.slots - 1
            else:
                held.slots = 0  # stale, restricted or too small: dropped (under the rate, never over)
        return amount, granted

    def _drop(self, slots: bool = True) -> float:
        """Forget what is held (the reservations only, without `slots`); returns the money, for the caller to
        release."""
        money, self.held.count = self.held.count * self.held.amount, 0
        if slots:
            self.held = Held()
        return money

    async def give_back(self) -> bool:
        """A reservation was refused: release the reservations held (they may be the room needed) and say whether
        anything was, or was already being, released, so the caller asks again at once."""
        if not self.enabled:
            return False
        await self._settled_fetch()
        under_way = list(self.releasing)
        released = self._drop(slots=False)
        if released > 0:
            await self._release(released)
        if under_way:
            await asyncio.gather(*under_way)
        return released > 0 or bool(under_way)

    def _on_idle(self) -> None:
        """Nothing in flight for a while: what is held goes back, and so do the deferred settlements."""
        self._idle = None
        if self.fetching is not None and not self.fetching.done():
            self._idle = asyncio.get_running_loop().call_later(self.idle_after, self._on_idle)
            return
        released = self._drop()
        if released > 0:
            self._release_later(released)
        self.send_owed()

    async def close(self) -> None:
        """No more steps: wait for one under way, release what is held, and for every release to land."""
        self.enabled = False
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            await self._settled_fetch()
        finally:
            released = self._drop()
            if released > 0:
                await self._release(released)
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
