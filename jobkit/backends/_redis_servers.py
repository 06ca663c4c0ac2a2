"""Where a Redis command goes: the one server of `redis://`, or the master owning its hash slot in a cluster.

`Lane` is a small set of raw redis-py connections to one server for request/response traffic: a call takes an
idle connection, writes its packed commands once and reads their replies. `Servers` maps hash slots to lanes;
for a standalone server every slot maps to the same lane, for `redis+cluster://` the map comes from
CLUSTER SLOTS and is read again when a node answers MOVED or disappears.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from ..errors import BackendError

__all__ = ["SLOTS", "Address", "Lane", "Servers", "new_connection", "parse_cluster_hosts"]

SLOTS = 16384
LANE_IDLE = 16  # idle request connections kept open per server however long they stay idle
LANE_IDLE_FOR = 10.0  # seconds a connection past LANE_IDLE may stay idle before it is closed
LANE_LIMIT = 64  # request connections per server at once, unless the URL's max_connections says otherwise
CHECK_IDLE_AFTER = 0.25  # seconds idle after which a connection is checked for a server-side close before use
Address = tuple[str, int]


def new_connection(pool: ConnectionPool) -> AbstractConnection:
    """A new connection with the pool's settings, owned by the caller (not lent by the pool)."""
    conn: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
    return conn


def parse_cluster_hosts(netloc_hosts: str) -> list[Address]:
    """`host:port,host:port` (IPv6 in brackets) as addresses; the port defaults to 6379."""
    out: list[Address] = []
    for item in netloc_hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"{item!r} is not host:port")
        out.append((host, int(port) if port else 6379))
    if not out:
        raise ValueError("no host given")
    return out


async def _closed_by_server(conn: AbstractConnection, idle: float) -> bool:
    """Whether the server has closed this idle connection: its stream reader has seen EOF (redis-py's private
    `_reader`; without it, a poll for connections idle a while, as the poll costs a timer)."""
    reader = getattr(conn, "_reader", False)
    if reader is None:
        return False  # never connected, or disconnected: redis-py connects it on the next send
    if isinstance(reader, asyncio.StreamReader):
        return reader.at_eof()
    if idle < CHECK_IDLE_AFTER:
        return False
    try:
        return bool(await conn.can_read_destructive())  # type: ignore[no-untyped-call]  # idle: nothing to read
    except (rexc.ConnectionError, rexc.TimeoutError, OSError):
        return True


class Lane:
    """Connections for request/response commands: each call takes an idle one, writes once, reads its replies."""

    def __init__(self, pool: ConnectionPool, limit: int | None = None) -> None:
        self.pool = pool
        self._idle: list[tuple[AbstractConnection, float]] = []  # with the time each was last used
        self._all: set[AbstractConnection] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(limit or LANE_LIMIT)  # the URL's max_connections

    async def send(self, packed: bytes, replies: int = 1) -> list[Any]:
        """Replies in order; an error reply is returned as its exception, other failures raise."""
        async with self._gate:
            return await self._send(packed, replies)

    async def _send(self, packed: bytes, replies: int) -> list[Any]:
        conn = await self._take()
        try:
            await conn.send_packed_command(packed)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(await conn.read_response())
                except rexc.ResponseError as exc:
                    out.append(exc)
        except BaseException:
            self._all.discard(conn)  # redis-py has disconnected it: the reply stream is out of step
            raise
        now = time.monotonic()
        self._idle.append((conn, now))
        # Calls take the most recently used connection, so those at the bottom are the ones a busy spell no longer
        # needs: past LANE_IDLE, close them once idle LANE_IDLE_FOR (closing at once made every call of a steady
        # load above LANE_IDLE concurrent calls open a connection of its own: 10x fewer reads per second).
        while len(self._idle) > LANE_IDLE and now - self._idle[0][1] > LANE_IDLE_FOR:
            old, _ = self._idle.pop(0)
            self._all.discard(old)
            task = asyncio.ensure_future(old.disconnect())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return out

    async def call(self, packed: bytes) -> Any:
        res = (await self.send(packed))[0]
        if isinstance(res, Exception):
            raise res
        return res

    async def _take(self) -> AbstractConnection:
        """An idle connection the server has not closed meanwhile (a restart closes them all), else a new one."""
        now = time.monotonic()
        while self._idle:
            conn, used = self._idle.pop()
            if not await _closed_by_server(conn, now - used):
                return conn
            self._all.discard(conn)
            await conn.disconnect()
        return self._new()

    def _new(self) -> AbstractConnection:
        conn = new_connection(self.pool)
        self._all.add(conn)
        return conn

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            await conn.disconnect()
        await asyncio.gather(*self._closing)


def _cluster_slots_command() -> bytes:
    return b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n"


class Servers:
    """Lanes by hash slot. `seeds` is None for a standalone server (kwargs name it), else the cluster's seed nodes.

    `kwargs` are redis-py connection options; `blocking` the same for connections that block on XREAD.
    """

    def __init__(self, kwargs: dict[str, Any], blocking: dict[str, Any], seeds: list[Address] | None,
                 where: str) -> None:
        self._kwargs, self._blocking, self._seeds, self._where = kwargs, blocking, seeds, where
        self.cluster = seeds is not None
        self._lanes: dict[Address, Lane] = {}
        self._bpools: dict[Address, ConnectionPool] = {}
        self._by_slot: list[Address | None] = [None] * SLOTS
        self._single: Lane | None = None
        self._stale = False  # a node vanished or answered MOVED: read the map again before the next call
        self._refreshing: asyncio.Future[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # -- standalone and cluster alike ---------------------------------------------------------------
    async def start(self) -> Lane:
        """Connect (reading the cluster's slot map) and return the lane for startup checks."""
        if self._seeds is None:
            self._single = Lane(ConnectionPool(**self._kwargs), self._kwargs.get("max_connections"))
            return self._single
        await self.refresh()
        return next(iter(self._lanes.values()))

    def lane(self, slot: int) -> Lane:
        if self._single is not None:
            return self._single
        addr = self._by_slot[slot]
        if addr is None:
            raise BackendError(f"no node of the Redis Cluster at {self._where} serves hash slot {slot}: the cluster is"
                               " down or being reconfigured; check `redis-cli cluster info`, then retry")
        return self._lanes[addr]

    def lane_at(self, addr: Address) -> Lane:
        """The lane to a node named by a redirection (created if it is new to us)."""
        if self._single is not None:
            return self._single
        lane = self._lanes.get(addr)
        if lane is None:
            lane = self._lanes[addr] = self._lane_for(addr)
        return lane

    def lanes(self) -> list[Lane]:
        """One lane per server (every master of a cluster)."""
        return [self._single] if self._single is not None else list(self._lanes.values())

    def blocking_connection(self, slot: int) -> AbstractConnection:
        """A new connection, for blocking reads, to the server of `slot`."""
        if self._seeds is None:
            addr: Address = ("", 0)
        else:
            found = self._by_slot[slot]
            if found is None:
                raise BackendError(f"no node of the Redis Cluster at {self._where} serves hash slot {slot}")
            addr = found
        pool = self._bpools.get(addr)
        if pool is None:
            extra = {} if self._seeds is None else {"host": addr[0], "port": addr[1]}
            pool = self._bpools[addr] = ConnectionPool(**{**self._blocking, **extra})
        return new_connection(pool)

    async def close(self) -> None:
        lanes = self.lanes()
        self._lanes, self._single, self._bpools = {}, None, {}
        for lane in lanes:
            await lane.close()
        await asyncio.gather(*self._closing)

    # -- cluster ------------------------------------------------------------------------------------
    def mark_stale(self) -> None:
        if self.cluster:
            self._stale = True

    async def fresh(self) -> None:
        """Read the slot map again if something showed it has changed."""
        if self._stale:
            await self.refresh()

    async def refresh(self) -> None:
        """Read CLUSTER SLOTS from a known node or a seed; concurrent callers share one read."""
        if self._refreshing is not None:
            return await asyncio.shield(self._refreshing)
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            await self._read_slots()
            self._refreshing.set_result(None)
        except BaseException as exc:
            self._refreshing.set_exception(exc)
            self._refreshing.exception()  # retrieved: callers get it through their own raise
            raise
        finally:
            self._refreshing = None

    async def _read_slots(self) -> None:
        assert self._seeds is not None
        candidates = list(dict.fromkeys([*self._lanes, *self._seeds]))
        errors: list[str] = []
        for addr in candidates:
            lane = self._lanes.get(addr) or self._lane_for(addr)
            try:
                reply = await lane.call(_cluster_slots_command())
            except (rexc.RedisError, OSError) as exc:
                errors.append(f"{addr[0]}:{addr[1]}: {exc}")
                if addr not in self._lanes:
                    await lane.close()
                continue
            self._apply(reply, addr, lane)
            return
        raise rexc.ConnectionError("no node of the cluster answered CLUSTER SLOTS (" + "; ".join(errors) + ")")

    def _lane_for(self, addr: Address) -> Lane:
        pool = ConnectionPool(**{**self._kwargs, "host": addr[0], "port": addr[1]})
        return Lane(pool, self._kwargs.get("max_connections"))

    def _apply(self, reply: list[Any], asked: Address, asked_lane: Lane) -> None:
        by_slot: list[Address | None] = [None] * SLOTS
        masters: set[Address] = set()
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0] if master[0] not in ("", "?", None) else asked[0]
            addr = (str(host), int(master[1]))
            masters.add(addr)
            by_slot[start:end + 1] = [addr] * (end - start + 1)
        lanes = {a: lane for a, lane in self._lanes.items() if a in masters}
        if asked in masters:
            lanes[asked] = asked_lane
        for addr in masters - set(lanes):
            lanes[addr] = self._lane_for(addr)
        gone = [lane for addr, lane in self._lanes.items() if addr not in lanes]
        if asked not in masters and asked not in self._lanes:
            gone.append(asked_lane)
        for lane in gone:  # a node left the cluster: close its connections in the background
            task = asyncio.ensure_future(lane.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._lanes, self._by_slot, self._stale = lanes, by_slot, False
