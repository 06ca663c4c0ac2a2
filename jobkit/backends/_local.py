"""In-process plumbing shared by the memory and SQLite backends: event fan-out and wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import cast

from ..models import JobEvent, JobState, Progress, trusted

__all__ = ["STATES", "Event", "EventHub", "Row", "Subscription", "event_id", "to_event"]

_END = object()
STATES = {s.value: s for s in JobState}  # faster than JobState(value)

# An event as a plain tuple: cheap to make, and once the GC has seen it (plain values only: the state
# as its string value) it leaves the GC's lists, so thousands retained for `since=` cost nothing. A
# JobEvent is made from it only when someone reads it. Fields: id (an int), queue, job_id, name, event,
# state, at, attempt, progress, error, owner.
Row = tuple[int, str, str, str, str, str, float, int, Progress | None, str | None, str | None]
Event = JobEvent | Row


def to_event(ev: Event) -> JobEvent:
    """The JobEvent of a row (a JobEvent is returned as it is)."""
    if isinstance(ev, JobEvent):
        return ev
    return trusted(JobEvent, {
        "id": str(ev[0]), "queue": ev[1], "job_id": ev[2], "name": ev[3], "event": ev[4], "state": STATES[ev[5]],
        "at": ev[6], "attempt": ev[7], "progress": ev[8], "error": ev[9], "owner": ev[10],
    })


def event_id(ev: Event) -> int:
    """The id of an event or row, as a number."""
    return (int(ev.id) if ev.id else 0) if isinstance(ev, JobEvent) else ev[0]


class EventHub:
    """Fans events out to in-process subscribers and wakes waiting workers, per queue."""

    def __init__(self, keep: int = 10_000) -> None:
        self._subs: dict[str, set[asyncio.Queue[object]]] = defaultdict(set)
        self._work: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._keep = keep
        self._recent: dict[str, deque[Event]] = defaultdict(lambda: deque(maxlen=keep))
        self.closed = False

    def publish(self, events: Iterable[Event], results: Mapping[str, str] | None = None) -> None:
        """Retain (when keeping any) and fan out events in id order; rows become JobEvents only for subscribers.

        `results`: job id -> result JSON, carried by those jobs' "completed" events (see JobEvent.carried_result).
        """
        for ev in events:
            queue = ev.queue if isinstance(ev, JobEvent) else ev[1]
            if self._keep:
                self._recent[queue].append(ev)
            subs = self._subs.get(queue)
            if subs:
                out = to_event(ev)
                if results and out.event == "completed" and out.job_id in results:
                    out.carry_result(json.loads(results[out.job_id]))
                for q in subs:
                    q.put_nowait(out)

    def publish_to(self, queue: str, events: Sequence[Event]) -> None:
        """`publish` for events all of one queue, in one step."""
        if self._keep:
            self._recent[queue].extend(events)
        subs = self._subs.get(queue)
        if subs:
            for ev in events:
                out = to_event(ev)
                for q in subs:
                    q.put_nowait(out)

    def recent(self, queue: str, after: int = 0) -> list[JobEvent]:
        """Retained events of `queue` with ids above `after`, oldest first."""
        return [to_event(ev) for ev in self._recent.get(queue, ()) if event_id(ev) > after]

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
