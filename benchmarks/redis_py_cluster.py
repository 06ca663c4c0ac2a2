"""jobkit's `redis+cluster://` backend on redis-py's `redis.asyncio.RedisCluster` (its slot map, redirections
and pools) instead of jobkit's own client (jobkit/backends/_redis_servers.py), for benchmarks/redis_cluster_clients.py.

`ClusterServers` offers what `RedisBackend` needs of `Servers` (lanes by hash slot, one lane per master, a
connection of its own for blocking reads). Commands arrive packed in RESP; a lane unpacks them and runs them with
`RedisCluster.execute_command` (several at once: its pipeline), with raw replies. `use()` puts it under every
RedisBackend of this process. The whole contract suite passed on it (2026-12-07, 199 cases) before it moved here.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection

import jobkit.backends.redis as jobkit_redis
from jobkit.backends._redis_servers import Servers
from jobkit.errors import BackendError

__all__ = ["ClusterServers", "unpack", "use"]

Address = tuple[str, int]
RAW = ("XRANGE", "XREVRANGE", "XREAD", "HGETALL", "INFO", "BLPOP", "LPOP", "HGET", "SMEMBERS", "SADD", "HLEN")


def _raw(response: Any, **options: Any) -> Any:
    return response


def unpack(packed: bytes) -> list[list[Any]]:
    """The commands in `packed` (RESP arrays of bulk strings, as `_redis_readers.command` writes them), their
    names as text (redis-py routes by them)."""
    out: list[list[Any]] = []
    i = 0
    while i < len(packed):
        end = packed.index(b"\r\n", i)
        count = int(packed[i + 1:end])
        i = end + 2
        args: list[Any] = []
        for _ in range(count):
            end = packed.index(b"\r\n", i)
            size = int(packed[i + 1:end])
            args.append(packed[end + 2:end + 2 + size])
            i = end + 4 + size
        args[0] = args[0].decode()
        if args[0].upper() in ("SCRIPT", "FUNCTION", "CLUSTER") and len(args) > 1:
            args[1] = args[1].decode()
        out.append(args)
    return out


class ClusterLane:
    """Runs packed commands on the cluster: routed by their keys, or on `node` when given."""

    def __init__(self, cluster: RedisCluster, node: ClusterNode | None = None) -> None:
        self._cluster, self._node = cluster, node

    async def send(self, packed: bytes, replies: int = 1) -> list[Any]:
        """Replies in order; an error reply is returned as its exception, other failures raise."""
        commands = unpack(packed)
        target = {} if self._node is None else {"target_nodes": self._node}
        if len(commands) == 1:
            try:
                return [await self._cluster.execute_command(*commands[0], **target)]
            except rexc.ResponseError as exc:
                return [exc]
        if self._node is not None:  # a pipeline routes by keys: commands for one node go one by one
            out: list[Any] = []
            for args in commands:
                try:
                    out.append(await self._cluster.execute_command(*args, **target))
                except rexc.ResponseError as exc:
                    out.append(exc)
            return out
        pipe = self._cluster.pipeline()
        for args in commands:
            pipe.execute_command(*args)
        return list(await pipe.execute(raise_on_error=False))

    async def call(self, packed: bytes) -> Any:
        res = (await self.send(packed))[0]
        if isinstance(res, Exception):
            raise res
        return res


class ClusterServers:
    """A Redis Cluster reached through redis-py's RedisCluster (see the module docstring)."""

    cluster = True

    def __init__(self, kwargs: dict[str, Any], blocking: dict[str, Any], seeds: list[Address], where: str) -> None:
        options = {k: v for k, v in kwargs.items() if k not in ("host", "port", "db", "connection_class")}
        if kwargs.get("connection_class") is SSLConnection:
            options["ssl"] = True
        self._cluster = RedisCluster(host=seeds[0][0], port=seeds[0][1], **options)
        manager = self._cluster.nodes_manager
        # Raw replies for the commands whose replies redis-py reshapes (a Lane's callers read them raw).
        callbacks = dict(manager.connection_kwargs.get("response_callbacks") or {})
        callbacks.update(dict.fromkeys(RAW, _raw))
        manager.connection_kwargs["response_callbacks"] = callbacks
        seeds_nodes = [ClusterNode(host, port, **manager.connection_kwargs) for host, port in seeds]
        manager.startup_nodes = {node.name: node for node in seeds_nodes}  # all seeds, with the URL's options
        self._blocking, self._where = blocking, where
        self._stale = False
        self._any = ClusterLane(self._cluster)

    async def start(self) -> ClusterLane:
        """Read the slot map; the lane of one master, for startup checks."""
        try:
            await self._cluster.initialize()
        except rexc.RedisClusterException as exc:  # no seed answered: as a lost connection
            raise rexc.ConnectionError(str(exc)) from None
        return ClusterLane(self._cluster, self._cluster.get_primaries()[0])

    def lane(self, slot: int) -> ClusterLane:
        return self._any

    def lane_at(self, addr: Address) -> ClusterLane:
        node = self._cluster.get_node(addr[0], addr[1])
        return ClusterLane(self._cluster, node) if node is not None else self._any

    def lanes(self) -> list[ClusterLane]:
        """One lane per master."""
        return [ClusterLane(self._cluster, node) for node in self._cluster.get_primaries()]

    def blocking_connection(self, slot: int) -> AbstractConnection:
        """A new connection, for blocking reads, to the master of `slot`."""
        try:
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
        except rexc.SlotNotCoveredError:
            raise BackendError(f"no node of the Redis Cluster at {self._where} serves hash slot {slot}") from None
        kwargs = {**self._blocking, "host": node.host, "port": node.port}
        kwargs.pop("db", None)
        connection_class: type[AbstractConnection] = kwargs.pop("connection_class", Connection)
        return connection_class(**kwargs)

    def mark_stale(self) -> None:
        self._stale = True

    async def fresh(self) -> None:
        if self._stale:
            await self.refresh()

    async def refresh(self) -> None:
        self._stale = False
        await self._cluster.nodes_manager.initialize()

    async def close(self) -> None:
        await self._cluster.aclose()


def use() -> None:
    """Make every RedisBackend of this process reach a cluster through redis-py's RedisCluster."""

    def servers(kwargs: dict[str, Any], blocking: dict[str, Any], seeds: list[Address] | None, where: str) -> Any:
        return Servers(kwargs, blocking, seeds, where) if seeds is None else ClusterServers(kwargs, blocking, seeds,
                                                                                            where)

    jobkit_redis.Servers = servers  # type: ignore[misc,assignment]
