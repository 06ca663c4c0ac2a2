"""In-process plumbing shared by the memory and SQLite backends: event fan-out and wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import cast

from ..models import JobEvent

__all__ = ["EventHub", "Subscription"]

_END = object()


class EventHub:
    """Fans events out to in-process subscribers and wakes waiting workers, per queue."""

    def __init__(self, keep: int = 10_000) -> None:
        self._subs: dict[str, set[asyncio.Queue[object]]] = defaultdict(set)
        self._work: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._recent: dict[str, deque[JobEvent]] = defaultdict(lambda: deque(maxlen=keep))
        self.closed = False

    def publish(self, events: Iterable[JobEvent]) -> None:
        for ev in events:
            self._recent[ev.queue].append(ev)
            for q in self._subs.get(ev.queue, ()):
                q.put_nowait(ev)

    def recent(self, queue: str) -> list[JobEvent]:
        return list(self._recent.get(queue, ()))

    def poke(self, queue: str) -> None:
        """Wake workers waiting for work in `queue`."""
        if queue in self._work:
            self._work[queue][1].set()

    def arm(self, queue: str) -> asyncio.Event:
        """Set up `queue`'s wake-up on this loop now, so a poke before the next `wait` is not missed."""
        return self._event(queue)

    def _event(self, queue: str) -> asyncio.Event:
        # An asyncio.Event belongs to one loop; scripts may call asyncio.run() many times.
        loop = asyncio.get_running_loop()
        held = self._work.get(queue)
        if held is None or held[0] is not loop:
            held = self._work[queue] = (loop, asyncio.Event())
        return held[1]

    async def wait(self, queue: str, timeout: float) -> None:
        ev = self._event(queue)
        if not ev.is_set() and not self.closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ev.wait(), timeout)
        ev.clear()

    def subscribe(self, queue: str) -> asyncio.Queue[object]:
        q: asyncio.Queue[object] = asyncio.Queue()
        self._subs[queue].add(q)
        return q

    def unsubscribe(self, queue: str, q: asyncio.Queue[object]) -> None:
        self._subs[queue].discard(q)

    async def drain(self, queue: str, q: asyncio.Queue[object]) -> AsyncIterator[JobEvent]:
        """Yield from a subscription until the hub closes."""
        try:
            while True:
                item = await q.get()
                if item is _END:
                    return
                assert isinstance(item, JobEvent)
                yield item
        finally:
            self.unsubscribe(queue, q)

    def close(self) -> None:
        self.closed = True
        for subs in self._subs.values():
            for q in subs:
                q.put_nowait(_END)
        for _, ev in self._work.values():
            ev.set()


class Subscription(AsyncIterator[JobEvent]):
    """One queue's events: a backlog first, then live ones, each id once and in order.

    `aclose()` always unsubscribes, even when the iterator was never started.
    """

    def __init__(
        self, hub: EventHub, queue: str, backlog: list[JobEvent], after: int,
        sub: asyncio.Queue[object] | None = None, on_end: Callable[[], None] | None = None,
    ) -> None:
        self._hub, self._queue = hub, queue
        self._sub = sub if sub is not None else hub.subscribe(queue)
        self._backlog = deque(backlog)
        self._after = after
        self._live = cast(AsyncGenerator[JobEvent, None], hub.drain(queue, self._sub))
        self._on_end = on_end
        self._open = True

    async def __anext__(self) -> JobEvent:
        try:
            if self._backlog:
                ev = self._backlog.popleft()
            else:
                ev = await self._live.__anext__()
                while int(ev.id) <= self._after:
                    ev = await self._live.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        self._after = int(ev.id)
        return ev

    async def aclose(self) -> None:
        self._backlog.clear()
        await self._live.aclose()
        self._end()

    def _end(self) -> None:
        if self._open:
            self._open = False
            self._hub.unsubscribe(self._queue, self._sub)  # drain's own cleanup runs only if it was started
            if self._on_end is not None:
                self._on_end()
