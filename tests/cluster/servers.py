"""A throwaway Redis Cluster: three masters on free loopback ports, made with redis-server and
`redis-cli --cluster create`, stopped by PID; over TLS when given certificates. Used by the `cluster` nox
session's tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.private_redis import RedisServer, free_port
from tests.tls_redis import Certs, TLSRedisServer

MASTERS = 3


class RedisCluster:
    """Three cluster-enabled redis-servers in `workdir`, joined into one cluster covering all 16384 slots.

    With `certs`, every node speaks only TLS, clients and the cluster bus alike (`rediss+cluster://`).
    """

    def __init__(self, workdir: Path, certs: Certs | None = None) -> None:
        self.certs = certs
        self.nodes: list[RedisServer] = []
        for i in range(MASTERS):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            args = ("--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-port", str(free_port()), "--cluster-node-timeout", "5000")
            if certs is None:
                self.nodes.append(RedisServer(node_dir, args=args))
            else:
                self.nodes.append(TLSRedisServer(node_dir, certs, args=(*args, "--tls-cluster", "yes")))
        self.ports = [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        if self.certs is None:
            return f"redis+cluster://{hosts}"
        return f"rediss+cluster://{hosts}?ssl_ca_certs={self.certs.ca}"

    def client(self, port: int) -> redis.Redis:
        tls = {} if self.certs is None else {"ssl": True, "ssl_ca_certs": str(self.certs.ca)}
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10, **tls)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready(timeout)
        tls = [] if self.certs is None else ["--tls", "--cacert", str(self.certs.ca)]
        subprocess.run(["redis-cli", *tls, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._until(deadline, lambda p=port: self.client(p).cluster("info")["cluster_state"] == "ok",
                        f"node {port} reports cluster_state:ok")

    def _until(self, deadline: float, check: Callable[[], object], what: str) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    raise RuntimeError(f"a redis-server of the cluster has exited: {node.log_tail()}")
            try:
                if check():
                    return
            except redis.RedisError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting until {what} ({last})")

    def flush(self) -> None:
        """Empty every master."""
        for port in self.ports:
            with self.client(port) as c:
                c.flushall()

    def slot_owner(self, slot: int) -> int:
        """The port of the master that serves `slot`."""
        with self.client(self.ports[0]) as c:
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(master[1])
        raise LookupError(f"slot {slot} is not served")

    def node_id(self, port: int) -> str:
        with self.client(port) as c:
            return str(c.execute_command("CLUSTER", "MYID"))

    def migrate_slot(self, slot: int, to_port: int) -> int:
        """Move `slot` and its keys to the master on `to_port` (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE, as
        `redis-cli --cluster reshard` does); returns how many keys moved."""
        from_port = self.slot_owner(slot)
        if from_port == to_port:
            return 0
        src, dst = self.client(from_port), self.client(to_port)
        src_id, dst_id = self.node_id(from_port), self.node_id(to_port)
        moved = 0
        try:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
            for port in self.ports:
                with self.client(port) as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        finally:
            src.close()
            dst.close()
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
