"""What a Redis backend instance reads on connections of their own, each in one blocking loop per queue.

- `Feed`: the queue's event stream (XREAD BLOCK), fanned out to this process's subscriptions.
- `Waker`: the queue's short wake stream (one entry per script that made work claimable), which wakes the
  `wait_for_work` and `on_work` callers on work made claimable by others; an instance wakes its own at once (`own`).
- `Inbox`: this instance's inbox list (BLPOP), where scripts push the ends of the jobs its waiters watch.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection

from ..errors import BackendError
from ..models import JobEvent, JobState, Progress
from ._redis_servers import Servers

__all__ = ["Ending", "EventId", "Feed", "Inbox", "Reader", "StreamReader", "Waker", "command", "event_id", "event_of",
           "pack", "pump", "settle"]

log = logging.getLogger("jobkit.redis")

FEED_BLOCK_MS = 5000  # an XREAD's BLOCK
INBOX_BLOCK = 5  # seconds an inbox's BLPOP blocks
INBOX_BATCH = 100  # ends an inbox takes at once after the first (LPOP with a count, in the same round trip)
RECENT_EVENTS = 1000  # entries a feed keeps for subscriptions that start a little in the past
UNCLAIMED = 1000  # ends an inbox keeps that came before their waiter watched (see Inbox.deliver_one)
LINGER = 5.0  # seconds a reader keeps reading without anyone to read for, for the next one
SOCKET_TIMEOUT = 15.0  # longer than any BLOCK, so only a dead server times out

EventId = tuple[int, int]
Segment = tuple[int, bytes]  # (number of arguments, their RESP encoding)
Item = tuple[EventId, JobEvent] | None


def pack(args: Iterable[Any]) -> Segment:
    """RESP bulk strings for str, bytes and int arguments (floats are passed as repr text)."""
    parts = [a if isinstance(a, bytes) else (a if isinstance(a, str) else str(a)).encode() for a in args]
    return len(parts), b"".join([b"$%d\r\n%b\r\n" % (len(p), p) for p in parts])


def command(*segments: Segment) -> bytes:
    return b"*%d\r\n" % sum(s[0] for s in segments) + b"".join(s[1] for s in segments)


def event_id(eid: str) -> EventId:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


def event_of(queue: str, eid: str, flat: Sequence[str]) -> JobEvent:
    """A JobEvent from a stream entry's fields: e = kind, v = NUL-separated id, name, state, at, attempt[, k, JSON],
    and o = the job's owner when it has one.

    k is p (progress), x (error) or r (the result of a completed job, when small: `carried_result`)."""
    v = flat[3].split("\0", 6)
    kind, extra = (v[5], v[6]) if len(v) > 6 else ("", "")
    # Plain construction: with pydantic 2.14, model_construct is the slower of the two for these models.
    ev = JobEvent(
        id=eid, queue=queue, job_id=v[0], name=v[1], event=flat[1], state=JobState(v[2]), at=float(v[3]),
        attempt=int(v[4]), progress=Progress.model_validate_json(extra) if kind == "p" else None,
        error=json.loads(extra) if kind == "x" else None, owner=flat[5] if len(flat) > 5 else None,
    )
    if kind == "r":
        ev.carry_result(json.loads(extra))
    return ev


def settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Reader:
    """One blocking command at a time on a queue's key, while someone needs what it reads (see `pump`)."""

    replies = 1  # replies per `read()` command

    def __init__(self, queue: str, key: str) -> None:
        self.queue, self.key = queue, key
        self.task: asyncio.Task[None] | None = None

    def busy(self, now: float) -> bool:
        raise NotImplementedError

    def read(self) -> bytes:
        raise NotImplementedError

    def deliver(self, replies: builtins.list[Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """The backend closes: let everyone waiting here go."""


class StreamReader(Reader):
    """XREAD BLOCK of a stream from `pos` on; `entries` gets what each read brought."""

    def __init__(self, queue: str, key: str, pos: str) -> None:
        super().__init__(queue, key)
        self.pos = pos

    def read(self) -> bytes:
        return command(pack(("XREAD", "COUNT", 1000, "BLOCK", FEED_BLOCK_MS, "STREAMS", self.key, self.pos)))

    def deliver(self, replies: builtins.list[Any]) -> None:
        if replies[0]:
            entries = replies[0][0][1]
            self.pos = entries[-1][0]
            self.entries(entries)

    def entries(self, entries: builtins.list[Any]) -> None:
        raise NotImplementedError


class Feed(StreamReader):
    """The event stream, for this process's subscriptions. It keeps the last RECENT_EVENTS entries, so a
    subscription starting a little in the past needs no XRANGE."""

    def __init__(self, queue: str, key: str, pos: str) -> None:
        super().__init__(queue, key, pos)
        self.recent: collections.deque[tuple[EventId, str, Sequence[str]]] = collections.deque()
        self.recent_from = event_id(pos)  # `recent` holds every entry after this id
        self.subs: set[asyncio.Queue[Item]] = set()

    def busy(self, now: float) -> bool:
        return bool(self.subs)

    def entries(self, entries: builtins.list[Any]) -> None:
        for eid, flat in entries:
            key = event_id(eid)
            self.keep(key, eid, flat)
            if self.subs and flat[1] != "resumed":
                item = (key, event_of(self.queue, eid, flat))
                for inbox in self.subs:
                    inbox.put_nowait(item)

    def close(self) -> None:
        for inbox in self.subs:
            inbox.put_nowait(None)

    def keep(self, key: EventId, eid: str, flat: Sequence[str]) -> None:
        if len(self.recent) >= RECENT_EVENTS:
            self.recent_from = self.recent.popleft()[0]
        self.recent.append((key, eid, flat))

    def replay(self, after: EventId) -> builtins.list[tuple[EventId, JobEvent]] | None:
        """The kept events after `after`, or None if some of them are no longer kept."""
        if after < self.recent_from:
            return None
        out = []
        for key, eid, flat in reversed(self.recent):  # the newest first: a replay is usually a few entries
            if key <= after:
                break
            if flat[1] != "resumed":
                out.append((key, event_of(self.queue, eid, flat)))
        out.reverse()
        return out


class Waker(StreamReader):
    """The wake stream, for `wait_for_work` and `on_work`: each entry names (field f) the first waking event of the
    script that wrote it. Entries of scripts this instance ran (`own` spans of event ids) wake nobody: the instance
    has woken its waiters already."""

    def __init__(self, queue: str, key: str, pos: str) -> None:
        super().__init__(queue, key, pos)
        self.seen: EventId = (0, 0)  # the newest waking event read
        self.waited_at = time.monotonic()  # when a wait for work last began
        self.woken = False  # a wake arrived while nobody was waiting
        self.waiters: set[asyncio.Future[None]] = set()
        self.own: list[tuple[EventId, EventId]] = []  # spans of event ids this instance wrote

    def busy(self, now: float) -> bool:
        return bool(self.waiters) or now - self.waited_at < LINGER

    def entries(self, entries: builtins.list[Any]) -> None:
        woke = False
        for _, flat in entries:
            self.seen = first = event_id(flat[1])
            if not self.is_own(first):
                woke = True
        if woke:
            self.wake()

    def close(self) -> None:
        self.wake()

    def mine(self, first: EventId, last: EventId) -> None:
        """This instance ran a script whose events span first..last and made work claimable: wake now, and
        not again when its wake entry is read."""
        if first > self.seen:  # else that entry was read already, and has woken the waiters
            self.own.append((first, last))
            self.wake()

    def wake(self) -> None:
        if self.waiters:
            for fut in self.waiters:
                settle(fut)
            self.waiters.clear()
        else:
            self.woken = True

    def is_own(self, eid: EventId) -> bool:
        while self.own and self.own[0][1] < eid:
            del self.own[0]
        return bool(self.own) and self.own[0][0] <= eid

    def arm(self, fut: asyncio.Future[None], timeout: float) -> Callable[[], None]:
        """Settle `fut` at the next wake (at once if one came while nobody waited) or after `timeout`; returns the call
        that disarms it."""
        self.waited_at = time.monotonic()
        if self.woken or timeout <= 0:
            self.woken = False
            settle(fut)
            return _nothing
        self.waiters.add(fut)
        timer = asyncio.get_running_loop().call_later(timeout, settle, fut)

        def disarm() -> None:
            timer.cancel()
            self.waiters.discard(fut)

        return disarm


def _nothing() -> None:
    pass


class Inbox(Reader):
    """This instance's inbox list for a queue: watch.lua registers a waiter's job there (or an add did), the script
    that ends the job pushes its end, and each end goes to the job's waiters."""

    replies = 2

    def __init__(self, queue: str, key: str, unclaimed: collections.OrderedDict[str, JobEvent] | None = None) -> None:
        super().__init__(queue, key)
        self.waiters: dict[str, set[asyncio.Queue[JobEvent | None]]] = {}
        # Ends nobody waits for yet; given, it outlives this reader (the backend keeps one per queue).
        self.unclaimed = collections.OrderedDict() if unclaimed is None else unclaimed
        self._read = command(pack(("BLPOP", key, INBOX_BLOCK))) + command(pack(("LPOP", key, INBOX_BATCH)))

    def busy(self, now: float) -> bool:
        return bool(self.waiters)

    def read(self) -> bytes:
        return self._read

    def deliver(self, replies: builtins.list[Any]) -> None:
        first, rest = replies
        if first:
            self.deliver_one(first[1])
        for item in rest or ():
            self.deliver_one(item)

    def deliver_one(self, item: str) -> None:
        """One pushed end, "<event kind>\\0<the fields of an event entry>" (see notify_end in _lib.lua). An end
        nobody waits for yet is kept a while: a job added here (its adder's inbox registered) may end in another
        process before its handle here watches it."""
        kind, _, packed = item.partition("\0")
        job_id = packed.partition("\0")[0]
        ev = event_of(self.queue, "", ("e", kind, "v", packed))
        boxes = self.waiters.get(job_id)
        if boxes:
            for box in boxes:
                box.put_nowait(ev)
            return
        self.unclaimed[job_id] = ev
        if len(self.unclaimed) > UNCLAIMED:
            self.unclaimed.popitem(last=False)

    def close(self) -> None:
        for boxes in self.waiters.values():
            for box in boxes:
                box.put_nowait(None)


class Ending(AsyncIterator[JobEvent]):
    """The end of one job, from its queue's inbox."""

    cancel_safe = True  # a cancelled __anext__ loses nothing (asyncio.Queue.get): a waiter may await it directly

    def __init__(self, inbox: Inbox, job_id: str) -> None:
        self._inbox, self._job_id = inbox, job_id
        self._box: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        inbox.waiters.setdefault(job_id, set()).add(self._box)
        early = inbox.unclaimed.pop(job_id, None)
        if early is not None:
            self._box.put_nowait(early)

    def __aiter__(self) -> Ending:
        return self

    async def __anext__(self) -> JobEvent:
        ev = await self._box.get()
        if ev is None:
            self.close()
            raise StopAsyncIteration
        return ev

    def close(self) -> None:
        boxes = self._inbox.waiters.get(self._job_id)
        if boxes is not None:
            boxes.discard(self._box)
            if not boxes:
                del self._inbox.waiters[self._job_id]

    async def aclose(self) -> None:
        self.close()


async def pump(reader: Reader, slot: int, servers: Callable[[], Servers | None], registry: dict[str, Any]) -> None:
    """Run `reader`'s command on a connection of its own to the server of `slot` while it is busy (and LINGER
    seconds after), then leave `registry` (the backend's readers of that kind, by queue). `servers` gives None
    once the backend is closed."""
    conn: AbstractConnection | None = None
    idle_since: float | None = None
    try:
        while (where := servers()) is not None:
            now = time.monotonic()
            if reader.busy(now):
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since > LINGER:
                break
            try:
                if conn is None:
                    await where.fresh()
                    conn = where.blocking_connection(slot)
                await conn.send_packed_command(reader.read())
                started = time.monotonic()
                replies = []
                for _ in range(reader.replies):
                    reply = await conn.read_response(timeout=SOCKET_TIMEOUT)
                    if reply is None and time.monotonic() - started >= SOCKET_TIMEOUT:
                        await conn.disconnect()  # no reply at all: the server or the network is gone
                        raise rexc.TimeoutError(f"no reply from Redis in {SOCKET_TIMEOUT}s")
                    replies.append(reply)
            except (rexc.RedisError, BackendError) as exc:
                log.warning("%s of queue %s: %s; retrying", type(reader).__name__.lower(), reader.queue, exc)
                moved = isinstance(exc, rexc.MovedError) or not isinstance(exc, rexc.ResponseError)
                if where.cluster and moved:
                    where.mark_stale()  # the slot may have moved to another node: read from there
                if conn is not None and (moved or reader.replies > 1):
                    await conn.disconnect()
                    conn = None
                await asyncio.sleep(0.5)
                continue
            reader.deliver(replies)
    finally:
        if registry.get(reader.queue) is reader:
            del registry[reader.queue]
        if conn is not None:
            await conn.disconnect()
