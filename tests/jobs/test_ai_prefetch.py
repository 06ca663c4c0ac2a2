"""Prefetch on the call path: each call takes the next one's reservation and rate slot while it is in flight, so a
steady stream sends its calls without a backend round trip before them, and money and rate stay exact: a prefetch
that does not fit is released, a stale or restricted slot is not used, drain leaves nothing reserved, and a budget
near its limit neither deadlocks nor overshoots."""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from jobkit.backends import Backend
from jobkit.jobs._quota import Budget, SharedRate
from jobkit.jobs.ai import set_price
from jobkit.jobs.ai.ahead import FRESH, HEADROOM, HIDES, MOST, QUICK_ANSWER, Held
from jobkit.jobs.ai.calls import BudgetExhausted, Caller
from jobkit.jobs.ai.client import ChatClient
from jobkit.jobs.ai.models import Retry
from jobkit.jobs.ai.prices import Price, pricer
from jobkit.jobs.ai.providers import get_provider
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import FAST, MODEL, default_provider

MESSAGES = [{"role": "user", "content": "Define 'lease' in two sentences."}]
DEAR = Price(input=1000.0, output=1000.0)  # $0.001 a token: a call of max_tokens=50 has a worst case near $0.07


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    """A FakeLLM answering in 20 ms: long enough for a prefetch to land while a call is in flight."""
    with default_provider(latency=0.02) as server:
        yield server


class Clock:
    """The prefetch's clock, moved by the test: slot ages and answer times are what the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


BACKGROUND = contextvars.ContextVar("BACKGROUND", default=False)


class Trips:
    """Wraps a Caller's backend and client: logs every reserve, take and settle, and which reserves and takes ran on
    a call's path: after `generate` was entered or an attempt failed, before the request went out, and not from the
    Caller's background work (prefetches, settlements and releases, tagged here)."""

    def __init__(self, caller: Caller, backend: Backend, *, answer_takes: float = 0.0, trip_takes: float = 0.0) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.path: list[str] = []
        self.on_path = False
        self.clock = Clock()
        self.sent = asyncio.Event()
        caller.ahead.clock = self.clock
        caller.ahead.idle_after = 3600  # what is held stays held between the test's calls (idleness has its test)
        self.trip_takes = trip_takes
        for name in ("reserve", "take", "settle"):
            setattr(backend, name, self._counted(name, getattr(backend, name)))
        complete = caller.client.complete

        async def sending(body: dict[str, Any], on_written: Callable[[], None] | None = None) -> Any:
            self.on_path = False
            self.sent.set()
            self.log.append(("sending", ()))

            def written() -> None:
                self.log.append(("written", ()))
                if on_written is not None:
                    on_written()

            try:
                return await complete(body, written)
            finally:
                self.clock.now += answer_takes
                self.on_path = True  # a retry's path starts here

        caller.client.complete = sending  # type: ignore[method-assign]
        for owner, name in ((caller.ahead, "_prefetch"), (caller.ahead, "_release_after_writes"), (caller, "_settle")):
            setattr(owner, name, self._background(getattr(owner, name)))
        self.caller = caller

    @staticmethod
    def _background(work: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def tagged(*args: Any) -> None:
            BACKGROUND.set(True)  # this task's own context, inherited by the tasks it starts
            await work(*args)

        return tagged

    def _counted(self, name: str, op: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any) -> Any:
            self.log.append((name, args))
            if self.on_path and not BACKGROUND.get() and name != "settle":
                self.path.append(name)
            try:
                return await op(*args)
            finally:
                if name != "settle":  # reserves and takes, on the path or prefetching: what a trip is timed by
                    self.clock.now += self.trip_takes

        return counted

    async def generate(self, max_tokens: int = 16) -> list[str]:
        """One call through the Caller; returns the reserves and takes on its path."""
        self.path, self.on_path = [], True
        try:
            await self.caller.generate(MESSAGES, max_tokens=max_tokens, response_model=None)
        finally:
            self.on_path = False
        return self.path

    def count(self, name: str) -> int:
        return sum(1 for op, _ in self.log if op == name)


def _between_sends(ops: list[str]) -> list[list[str]]:
    """The logged backend operations before each request went out, since the previous request's answer."""
    steps: list[list[str]] = [[]]
    for op in ops:
        if op == "sending":
            steps.append([])
        elif op != "written":
            steps[-1].append(op)
    return steps


def make_caller(backend: Backend, *, limit: float | None = 100.0, units: int | None = None, model: str = MODEL,
                concurrency: int = 1) -> Caller:
    provider = get_provider("default")
    rate = SharedRate(backend, "jobkit-ai", f"default:{model}", 100_000, units)
    return Caller(ChatClient(provider, timeout=10, connections=concurrency), rate,
                  Budget(backend, "default", "ai-cost:prefetch-test", limit), pricer(provider, model), model,
                  Retry.model_validate(FAST), 0, None, concurrency=concurrency, prefetch=True)


@pytest.fixture
async def caller_of() -> AsyncIterator[Callable[..., Caller]]:
    made: list[Caller] = []

    def make(backend: Backend, **kw: Any) -> Caller:
        made.append(make_caller(backend, **kw))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:
            await c.client.aclose()


async def landed(caller: Caller) -> None:
    """Wait (bounded) for the settlements and the prefetch under way, without closing anything."""
    async def settle() -> None:
        while caller.settling or (caller.ahead.fetching is not None and not caller.ahead.fetching.done()):
            await asyncio.gather(*caller.settling, *([caller.ahead.fetching] if caller.ahead.fetching else []))

    await asyncio.wait_for(settle(), 10)


async def test_a_steady_stream_sends_every_call_without_a_backend_trip_first(backend: Backend, llm: FakeLLM,
                                                                           caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend)
    trips = Trips(caller, backend)
    paths = [await trips.generate() for _ in range(12)]
    assert sorted(paths[0]) == ["reserve", "take"], "the first call reserves and takes (at once) before it is sent"
    assert paths[1] == ["take"], "the second finds its reservation ready; its slot waited for a first answer time"
    assert paths[2:] == [[]] * 10, "in steady state nothing on the path"
    assert trips.count("take") <= 12 + 1, "at most the one prefetched slot unused"
    ops = [op for op, _ in trips.log]
    while "sending" in ops:
        going = ops.index("sending")
        assert ops[going + 1] == "written", "no backend trip started while a request was being written"
        ops = ops[going + 2:]

    await landed(caller)
    held = (await caller.budget.totals()).reserved
    assert held > 0, "a prefetch for a thirteenth call is held"
    await _drained_exactly(caller, llm, calls=12)


async def test_a_prefetch_too_small_for_the_next_call_is_released(backend: Backend, llm: FakeLLM,
                                                                  caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend, units=1_000_000)
    trips = Trips(caller, backend)
    for _ in range(3):
        await trips.generate(max_tokens=16)
    await landed(caller)
    small = caller.ahead.held
    assert small.count > 0 and small.slots > 0
    unused = small.count * small.amount
    path = await trips.generate(max_tokens=2000)
    assert sorted(path) == ["reserve", "take"], "neither the money nor the units of the prefetch covered it"
    await caller.drain()
    assert ("settle", ("default", "ai-cost:prefetch-test", unused, 0.0)) in trips.log, "all released at $0"
    totals = await caller.budget.totals()
    assert totals.reserved == pytest.approx(0, abs=1e-12)
    assert totals.spent == pytest.approx(llm.cost(pricer(get_provider("default"), MODEL)))


async def test_a_stale_slot_is_not_used(backend: Backend, llm: FakeLLM, caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend)
    trips = Trips(caller, backend)
    for _ in range(3):
        await trips.generate()
    await landed(caller)
    assert caller.ahead.held.slots > 0
    trips.clock.now += FRESH  # the slot is now as old as a grant may be and still reach the provider in its window
    assert await trips.generate() == ["take"], "a fresh slot taken on the path, the reservation still prefetched"
    assert await trips.generate() == [], "and the stream is steady again"
    await caller.drain()


async def test_slow_answers_prefetch_no_slots_so_none_is_wasted(backend: Backend, llm: FakeLLM,
                                                               caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend)
    trips = Trips(caller, backend, answer_takes=QUICK_ANSWER + 0.01)
    paths = [await trips.generate() for _ in range(6)]
    assert paths[1:] == [["take"]] * 5, "the money prefetched, the slot taken when the call goes"
    await caller.drain()
    assert trips.count("take") == 6, "every slot taken was used"


def _requests_asked(trips: Trips) -> list[float]:
    """How many requests each logged `take` asked for."""
    return [ask.amount for op, args in trips.log if op == "take" for ask in args[1] if ask.key.endswith(":requests")]


async def test_quick_answers_take_for_several_calls_in_one_step_on_the_path(
        backend: Backend, llm: FakeLLM, caller_of: Callable[..., Caller]) -> None:
    """A loopback server answering about as fast as the backend: a prefetch in the background would only compete
    with the call, so the call that finds nothing held takes the next calls' reservations and slots on its path, in
    one step with the deferred settlements: one call in MOST pays a trip."""
    caller = caller_of(backend)
    answer, trip = 0.001, 0.001
    assert answer + 2 * trip < HIDES * trip, "even with a prefetch's two trips landing in it, a call is too short"
    assert FRESH / (2 * (answer + 2 * trip)) >= MOST, "so quick that MOST calls are sent while a slot is fresh"
    trips = Trips(caller, backend, answer_takes=answer, trip_takes=trip)
    paths = [await trips.generate() for _ in range(40)]
    assert sorted(paths[0]) == ["reserve", "take"], "the first call reserves and takes (at once) before it is sent"
    stepped = [p for p in paths if p]
    assert len(stepped) <= math.ceil(40 / MOST) + 1, paths
    assert all(p.count("reserve") <= 1 and p.count("take") <= 1 for p in paths), "one step at most on a path"
    assert max(_requests_asked(trips)) == MOST, "a step takes slots for MOST calls at once"
    # Settlements wait for the next step and go in it (one transaction on SQLite), merged into one: never alone
    # while a call is in flight; the last ones wait for drain.
    for _ in range(10):  # let background work run, as it would have before the next call
        await asyncio.sleep(0)
    steps = _between_sends([op for op, _ in trips.log])
    assert all("reserve" in step or "take" in step for step in steps if "settle" in step), steps
    assert all(step.count("settle") <= 1 for step in steps), steps
    assert steps[-1] == [], "after the last answer, nothing until drain: its settlement waits there"
    await _drained_exactly(caller, llm, calls=40)


async def test_slots_taken_together_are_as_many_as_are_used_while_fresh_and_dropped_after(
        backend: Backend, llm: FakeLLM, caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend)
    answer = 0.02
    trips = Trips(caller, backend, answer_takes=answer, trip_takes=answer / HIDES)  # too quick to hide a prefetch
    for _ in range(4):
        await trips.generate()
    asked = max(_requests_asked(trips))
    assert 1 < asked <= FRESH / (2 * answer), "sent within FRESH at this answer time, with room for gaps"
    held = caller.ahead.held
    assert held.slots > 0
    granted = held.granted
    trips.clock.now += FRESH  # the slots are now as old as a grant may be and still reach the provider in its window
    assert await trips.generate() == ["take"], "a new step on the path: the stale slots were not used"
    assert caller.ahead.held.granted > granted and caller.ahead.held.slots == _requests_asked(trips)[-1] - 1


async def test_quick_answers_near_the_limit_take_one_reservation_per_call_and_never_overshoot(
        backend: Backend, llm: FakeLLM, caller_of: Callable[..., Caller]) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output)
    caller = caller_of(backend, limit=1.0, model="dear-model", concurrency=2)
    trips = Trips(caller, backend, answer_takes=0.002, trip_takes=0.002)
    paths, worst = await _spend_to_the_limit(caller, trips, llm)
    assert (await caller.budget.totals()).reserved == pytest.approx(0, abs=1e-12)
    each = worst * HEADROOM
    reserves = [(args[2], args[3]) for op, args in trips.log if op == "reserve" and args[2] > 0]
    several = [(amount, limit) for amount, limit in reserves if amount > 1.5 * each]
    assert several, "far from the limit, one step reserved for several calls"
    for amount, limit in several:
        n = round(amount / each)
        assert limit <= 1.0 - (n - 1 + 2) * each + 1e-9, "only with room left after it for n - 1 + concurrency more"
    assert all(amount <= each + 1e-9 for amount, _ in reserves[-3:]), "near the limit, one reservation at a time"
    assert all("reserve" in p for p in paths[-3:]), "each on its own call's path, as without a prefetch"


async def test_an_idle_caller_gives_back_what_it_holds(backend: Backend, llm: FakeLLM,
                                                       caller_of: Callable[..., Caller]) -> None:
    """Another worker sharing the budget finds the room: once no call is in flight for a while, the reservations
    held for the next calls are released and the deferred settlements sent, without waiting for drain."""
    caller = caller_of(backend)
    trips = Trips(caller, backend, answer_takes=0.002, trip_takes=0.002)
    caller.ahead.idle_after = 0.05
    for _ in range(4):
        await trips.generate()
    assert max(_requests_asked(trips)) > 1, "a step took for several calls"
    billed = llm.cost(pricer(get_provider("default"), MODEL))

    async def given_back() -> None:
        while True:
            totals = await caller.budget.totals()
            if totals.reserved < 1e-12 and totals.spent == pytest.approx(billed):
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(given_back(), 10)
    assert caller.ahead.held.count == 0 and not caller.deferred
    await caller.drain()


async def test_a_slot_held_while_the_call_waited_for_room_is_not_used_stale(
        backend: Backend, llm: FakeLLM, caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend, limit=0.5)
    trips = Trips(caller, backend)
    await trips.generate()
    await landed(caller)
    await caller.ahead.give_back()  # the money part out of the way: the next call holds a slot, and reserves
    caller.ahead.held = Held(units=10**6, slots=3, granted=trips.clock.now, epoch=caller.ahead.epoch)
    spend = await caller.budget.totals()
    room = 0.5 - spend.spent - spend.reserved
    assert (await caller.budget.reserve(room))[0], "another job holds the rest of the budget"
    call = asyncio.ensure_future(trips.generate())

    async def short_of_room() -> None:
        while not caller.short_of_room:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(short_of_room(), 5)
    trips.clock.now += FRESH  # it waited as long as a slot stays usable
    await caller.budget.settle(room, 0.0)  # the other job's call settles: room again
    caller.settled.set()
    path = await asyncio.wait_for(call, 5)
    assert caller.ahead.held.slots == 2, "it claimed a slot, fresh then"
    assert sorted(path) == ["reserve", "reserve", "take"], "refused, then granted; and a slot taken, fresh now"
    await caller.drain()


def test_slots_taken_at_once_leave_most_of_a_slice_to_others(memory: Backend) -> None:
    assert SharedRate(memory, "q", "n", 50).most_at_once(100) == 2  # a slice of 9
    assert SharedRate(memory, "q", "n", 600).most_at_once(100) == 25  # a slice of 100
    assert SharedRate(memory, "q", "n", 600, units=60_000).most_at_once(1000) == 2  # 10,000 units a slice


async def test_a_429_drops_the_held_slot(backend: Backend, llm: FakeLLM, caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend)
    trips = Trips(caller, backend)
    for _ in range(3):
        await trips.generate()
    llm.fail_next("429", seconds=0.05)
    path = await trips.generate()
    assert llm.statuses[429] == 1 and caller.usage.calls == 5
    assert set(path) == {"take"}, "the retry asked for a slot after the pause: the one prefetched was dropped"
    assert await trips.generate() == ["take"], "no slot prefetched while the rate was restricted"
    assert await trips.generate() == [], "steady again once an answer did not restrict it"
    await caller.drain()
    assert (await caller.budget.totals()).reserved == pytest.approx(0, abs=1e-12)


async def test_near_the_limit_no_prefetch_no_overshoot_no_deadlock(backend: Backend, llm: FakeLLM,
                                                                   caller_of: Callable[..., Caller]) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output)
    caller = caller_of(backend, limit=1.0, model="dear-model")
    trips = Trips(caller, backend)
    paths, _ = await _spend_to_the_limit(caller, trips, llm)
    assert [] in paths, "far from the limit the stream was steady"
    assert "reserve" in paths[-1], "near it, each call reserved its own, as without prefetch"
    assert (await caller.budget.totals()).reserved == pytest.approx(0, abs=1e-12)


async def test_a_refused_reservation_releases_our_own_prefetch_first(backend: Backend, llm: FakeLLM,
                                                                     caller_of: Callable[..., Caller]) -> None:
    """A call that found no prefetch (another call of this job's was still taking it) is refused because that
    prefetch holds the last room: it releases it and reserves, instead of waiting for a release that never comes."""
    caller = caller_of(backend, limit=0.5, concurrency=2)
    await caller.generate(MESSAGES, max_tokens=16, response_model=None)
    await landed(caller)
    held = caller.ahead.held
    assert held.count > 0
    amount = held.amount
    spend = await caller.budget.totals()
    assert spend.reserved == pytest.approx(held.count * amount)
    granted, _ = await caller.budget.reserve(0.5 - spend.spent - spend.reserved)  # another job takes the rest
    assert granted
    await asyncio.wait_for(caller._reserve(amount), 5)
    assert caller.ahead.held.count == 0
    assert (await caller.budget.totals()).reserved == pytest.approx(0.5 - spend.spent - spend.reserved + amount)


async def test_a_cancelled_call_then_drain_leaves_nothing_reserved(backend: Backend, llm: FakeLLM,
                                                                   caller_of: Callable[..., Caller]) -> None:
    caller = caller_of(backend)
    trips = Trips(caller, backend)
    for _ in range(3):
        await trips.generate()
    trips.sent.clear()
    call = asyncio.ensure_future(trips.generate())
    await asyncio.wait_for(trips.sent.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await caller.drain()
    totals = await caller.budget.totals()
    assert totals.reserved == pytest.approx(0, abs=1e-12), "the prefetch taken as it went out was released too"
    assert totals.spent >= llm.cost(pricer(get_provider("default"), MODEL)), "the call sent counts at its worst"
    assert totals.spent == pytest.approx(caller.usage.cost)


async def test_a_call_short_of_room_is_not_kept_waiting_by_a_deferred_settlement(
        backend: Backend, llm: FakeLLM, caller_of: Callable[..., Caller]) -> None:
    """Fast answers defer each settlement to the next call's reservation; a call waiting for room in the budget
    must not wait for that: a call that ends meanwhile settles at once (two processes sharing a budget hung on it)."""
    caller = caller_of(backend, concurrency=2)
    trips = Trips(caller, backend, answer_takes=0.002, trip_takes=0.002)
    for _ in range(3):
        await trips.generate(max_tokens=200)
    assert not caller.ahead.worth_it(), "answers too fast for a prefetch: settlements are deferred"
    caller._send_deferred()
    await caller._drain_settlements()
    worst = caller.price(caller.estimate.tokens(MESSAGES), 0, 200)
    spent = (await caller.budget.totals()).spent
    caller.budget.limit = spent + 1.5 * worst  # room for one call in flight at a time, and the answers cost far less
    both = asyncio.gather(trips.generate(max_tokens=200), trips.generate(max_tokens=200))
    await asyncio.wait_for(both, 5)
    await caller.drain()
    totals = await caller.budget.totals()
    assert totals.reserved == pytest.approx(0, abs=1e-12) and totals.spent <= caller.budget.limit


async def _spend_to_the_limit(caller: Caller, trips: Trips, llm: FakeLLM) -> tuple[list[list[str]], float]:
    """Calls of 50 tokens until the $1 budget refuses one, then drain: the backend operations on each call's path,
    and a call's worst case. Checks the limit held: billed within it, and stopped only when a worst case no longer
    fit."""
    paths = []

    async def until_the_limit() -> None:
        while True:
            paths.append(await trips.generate(max_tokens=50))

    with pytest.raises(BudgetExhausted):
        await asyncio.wait_for(until_the_limit(), 30)
    await caller.drain()
    billed = llm.cost(DEAR.cost)
    worst = DEAR.cost(caller.estimate.tokens(MESSAGES), 0, 50)
    assert billed <= 1.0 and (await caller.budget.totals()).spent == pytest.approx(billed)
    assert billed > 1.0 - worst, "stopped only when a worst case no longer fit"
    return paths, worst


async def _drained_exactly(caller: Caller, llm: FakeLLM, calls: int) -> None:
    """After drain: nothing left reserved (what was taken ahead and unused went back), the budget spent exactly what
    the server billed for `calls` calls, and the caller counted the same."""
    await caller.drain()
    totals = await caller.budget.totals()
    billed = llm.cost(pricer(get_provider("default"), MODEL))
    assert totals.reserved == pytest.approx(0, abs=1e-12), "drain released the reservations left unused"
    assert totals.spent == pytest.approx(billed) and caller.usage.cost == pytest.approx(billed)
    assert llm.calls == caller.usage.calls == calls
