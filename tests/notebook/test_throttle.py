"""Throttle: a flood of updates becomes a few renders, and the last one is always shown."""

from __future__ import annotations

import asyncio

from jobkit.notebook.throttle import Throttle


async def test_a_thousand_pushes_render_twice_and_end_on_the_last() -> None:
    shown: list[int] = []
    last = asyncio.Event()

    def render(v: int) -> None:
        shown.append(v)
        if v == 999:
            last.set()

    t: Throttle[int] = Throttle(render, interval=0.1)
    for i in range(1000):
        t.push(i)
    assert shown == [0]  # the first at once, the rest coalesced behind the timer
    await asyncio.wait_for(last.wait(), 2)
    assert shown == [0, 999]
    assert (t.pushes, t.renders) == (1000, 2)


async def test_flush_shows_the_pending_value_at_once() -> None:
    shown: list[str] = []
    t: Throttle[str] = Throttle(shown.append, interval=60)
    t.push("a")
    t.push("b")
    t.push("c")
    assert shown == ["a"]
    t.flush()
    assert shown == ["a", "c"]
    t.flush()  # nothing pending: no render
    assert t.renders == 2


async def test_steady_pushes_for_half_a_second_render_about_five_times() -> None:
    shown: list[int] = []
    t: Throttle[int] = Throttle(shown.append, interval=0.1)
    loop = asyncio.get_running_loop()
    started, i = loop.time(), 0
    while loop.time() - started < 0.5:
        i += 1
        t.push(i)
        await asyncio.sleep(0.002)  # a job reporting ~500 times a second
    t.close()
    assert 4 <= t.renders <= 8, t.renders
    assert shown[-1] == i


async def test_a_failing_render_is_logged_not_raised() -> None:
    def render(v: int) -> None:
        raise RuntimeError("frontend gone")

    t: Throttle[int] = Throttle(render, interval=0)
    t.push(1)
    t.push(2)
    assert t.renders == 2
