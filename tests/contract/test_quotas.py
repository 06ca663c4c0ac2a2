"""Shared quotas on every backend: sliding-window counters (take, restrict) and budgets (reserve, settle, drop).

`now` is the caller's clock, so these tests move time by passing it: no sleeping.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from jobkit.backends import Ask, Backend, Spend, from_url

MIN = 60.0


def rpm(limit: float = 3, amount: float = 1) -> Ask:
    return Ask("rpm", amount, limit, MIN)


async def test_take_grants_up_to_the_limit_then_says_how_long_to_wait(backend: Backend, qname: str) -> None:
    t = time.time()
    assert [await backend.take(qname, [rpm()], t + i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert await backend.take(qname, [rpm()], t + 10) == pytest.approx(50.0)  # the first grant lapses at t + 60
    assert await backend.take(qname, [rpm()], t + 60) == 0.0
    assert await backend.take(qname, [rpm()], t + 60.5) == pytest.approx(0.5)  # the second lapses at t + 61


async def test_windows_slide_so_no_span_holds_more_than_the_limit(backend: Backend, qname: str) -> None:
    """A fixed window would let twice the limit through around its boundary; a sliding one never does."""
    t = time.time()
    granted: list[float] = []
    for step in range(0, 240):  # an ask every half second for two minutes
        now = t + step * 0.5
        if await backend.take(qname, [rpm(limit=10)], now) == 0.0:
            granted.append(now)
    assert len(granted) == 20  # 10 per minute, the rest refused
    assert all(sum(1 for g in granted if s <= g < s + MIN) <= 10 for s in granted)


async def test_amounts_count_not_calls(backend: Backend, qname: str) -> None:
    t = time.time()
    tpm = Ask("tpm", 600, 1000, MIN)
    assert await backend.take(qname, [tpm], t) == 0.0
    assert await backend.take(qname, [tpm], t + 1) == pytest.approx(59.0)
    assert await backend.take(qname, [tpm._replace(amount=400)], t + 1) == 0.0  # exactly the limit fits


async def test_every_ask_or_none(backend: Backend, qname: str) -> None:
    """Requests/min and tokens/min are taken together: a refused one records neither."""
    t = time.time()
    assert await backend.take(qname, [rpm(limit=5), Ask("tpm", 900, 1000, MIN)], t) == 0.0
    assert await backend.take(qname, [rpm(limit=5), Ask("tpm", 200, 1000, MIN)], t + 5) == pytest.approx(55.0)
    for i in range(4):  # the refused take left the request counter at 1 of 5
        assert await backend.take(qname, [rpm(limit=5)], t + 6 + i) == 0.0
    assert await backend.take(qname, [rpm(limit=5)], t + 10) > 0


async def test_counters_are_per_queue_and_key(backend: Backend, qname: str) -> None:
    t = time.time()
    assert await backend.take(qname, [rpm(limit=1)], t) == 0.0
    assert await backend.take(qname + "-b", [rpm(limit=1)], t) == 0.0
    assert await backend.take(qname, [Ask("other", 1, 1, MIN)], t) == 0.0
    assert await backend.take(qname, [rpm(limit=1)], t) > 0


async def test_asks_that_can_never_fit_are_refused(backend: Backend, qname: str) -> None:
    with pytest.raises(ValueError, match="amount from 0 to limit"):
        await backend.take(qname, [rpm(limit=2, amount=3)], time.time())
    with pytest.raises(ValueError, match="each counter once"):
        await backend.take(qname, [rpm(), rpm()], time.time())
    with pytest.raises(ValueError, match="window"):
        await backend.take(qname, [Ask("x", 1, 1, 0)], time.time())


async def test_concurrent_takes_never_pass_the_limit(backend: Backend, qname: str) -> None:
    t = time.time()
    waits = await asyncio.gather(*(backend.take(qname, [rpm(limit=10)], t) for _ in range(50)))
    assert waits.count(0.0) == 10 and all(w == pytest.approx(MIN) for w in waits if w)


async def test_restrict_holds_what_a_server_says_is_left(backend: Backend, qname: str) -> None:
    """A provider says 1 request left, resetting in 5 s: one more is granted, the next waits for the reset."""
    t = time.time()
    assert await backend.take(qname, [rpm(limit=50)], t) == 0.0
    await backend.restrict(qname, "rpm", remaining=1, limit=50, until=t + 5, now=t)
    assert await backend.take(qname, [rpm(limit=50)], t + 1) == 0.0
    assert await backend.take(qname, [rpm(limit=50)], t + 1) == pytest.approx(4.0)
    assert await backend.take(qname, [rpm(limit=50)], t + 5) == 0.0  # the restriction lapsed


async def test_restrict_to_zero_pauses_everyone_and_never_loosens(backend: Backend, qname: str) -> None:
    t = time.time()
    await backend.restrict(qname, "rpm", remaining=0, limit=50, until=t + 12, now=t)  # a 429 with Retry-After: 12
    assert await backend.take(qname, [rpm(limit=50)], t) == pytest.approx(12.0)
    await backend.restrict(qname, "rpm", remaining=100, limit=50, until=t + 30, now=t)  # more than we allow: no-op
    assert await backend.take(qname, [rpm(limit=50)], t + 12) == 0.0


async def test_budget_reserves_within_the_limit_and_settles_to_actual(backend: Backend, qname: str) -> None:
    assert await backend.reserve(qname, "cost", 0.4, 1.0) == (True, Spend(0.0, 0.4))
    assert await backend.reserve(qname, "cost", 0.5, 1.0) == (True, Spend(0.0, 0.9))
    assert await backend.reserve(qname, "cost", 0.2, 1.0) == (False, Spend(0.0, 0.9))  # nothing reserved
    assert await backend.settle(qname, "cost", 0.4, 0.1) == Spend(pytest.approx(0.1), pytest.approx(0.5))
    granted, spend = await backend.reserve(qname, "cost", 0.2, 1.0)
    assert granted and spend == (pytest.approx(0.1), pytest.approx(0.7))
    assert await backend.reserve(qname, "cost", 0.0, 1.0) == (True, spend)  # a zero reservation reads the totals
    assert await backend.reserve(qname, "other", 5.0, None) == (True, Spend(0.0, 5.0))  # no limit
    assert await backend.drop_budget(qname, "cost") == spend
    assert await backend.drop_budget(qname, "cost") == Spend(0.0, 0.0)
    assert await backend.reserve(qname, "cost", 0.0, 1.0) == (True, Spend(0.0, 0.0))


async def test_settle_records_spending_past_the_limit(backend: Backend, qname: str) -> None:
    """Money already spent is recorded, whatever the limit: then nothing more is reserved."""
    assert (await backend.reserve(qname, "cost", 1.0, 1.0))[0]
    assert await backend.settle(qname, "cost", 1.0, 1.25) == Spend(1.25, 0.0)
    assert await backend.reserve(qname, "cost", 0.01, 1.0) == (False, Spend(1.25, 0.0))


async def test_concurrent_reservations_never_pass_the_limit(backend: Backend, qname: str) -> None:
    results = await asyncio.gather(*(backend.reserve(qname, "cost", 1.0, 10.0) for _ in range(25)))
    assert sum(ok for ok, _ in results) == 10
    assert await backend.reserve(qname, "cost", 0.0, 10.0) == (True, Spend(0.0, 10.0))


async def test_two_clients_of_one_store_share_quotas(backend: Backend, qname: str) -> None:
    """Another connection to the same SQLite file or Redis sees the same counters and budgets, atomically."""
    if backend.url.startswith("memory"):
        pytest.skip("memory:// is one process's store: a second client is a second store")
    other = from_url(backend.url)
    await other.open()
    try:
        t = time.time()
        waits = await asyncio.gather(*(b.take(qname, [rpm(limit=7)], t) for b in (backend, other) for _ in range(10)))
        assert waits.count(0.0) == 7
        results = await asyncio.gather(*(b.reserve(qname, "cost", 0.5, 3.0) for b in (backend, other)
                                         for _ in range(10)))
        assert sum(ok for ok, _ in results) == 6
        assert await other.settle(qname, "cost", 0.5, 0.25) == Spend(0.25, 2.5)
        assert await backend.reserve(qname, "cost", 0.0, 3.0) == (True, Spend(0.25, 2.5))
    finally:
        await other.close()
