"""Shared fixtures: a backend of each kind (memory, SQLite file, real Redis), fresh for every test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from jobkit.backends import Backend, from_url
from jobkit.errors import ConfigError
from jobkit.models import JobEvent
from tests.cluster.servers import RedisCluster

REDIS_TEST_URL = os.environ.get("JOBKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# The cluster session runs the contract suite on a Redis Cluster instead: JOBKIT_TEST_BACKENDS=cluster.
BACKENDS = os.environ.get("JOBKIT_TEST_BACKENDS", "memory,sqlite,redis").split(",")


# JOBKIT_TEST_REDIS_FUNCTIONS=0 runs the Redis tests' own backends on EVALSHA, as on Redis 6 (nox -s redis_eval);
# unset, they load the scripts as a function library where the server takes it.
REDIS_FUNCTIONS = {"0": False, "1": True}.get(os.environ.get("JOBKIT_TEST_REDIS_FUNCTIONS", ""))


def redis_backend(url: str) -> Backend:
    """A Redis backend for `url` in the script mode the test run asks for (see REDIS_FUNCTIONS)."""
    from jobkit.backends.redis import RedisBackend

    return RedisBackend(url, functions=REDIS_FUNCTIONS)


def require_redis() -> bool:
    return os.environ.get("JOBKIT_REQUIRE_REDIS", "").strip().lower() in ("1", "true", "yes")


async def open_redis() -> Backend:
    """The test Redis db, emptied; skipped when Redis is absent unless JOBKIT_REQUIRE_REDIS=1."""
    backend = redis_backend(REDIS_TEST_URL)
    try:
        await backend.open()
    except ConfigError as exc:
        if require_redis():
            pytest.fail(f"JOBKIT_REQUIRE_REDIS=1 but Redis at {REDIS_TEST_URL} is unusable: {exc}")
        pytest.skip(f"Redis at {REDIS_TEST_URL} is not available: {exc}")
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_TEST_URL)
    await client.flushdb()
    await client.aclose()
    return backend


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on free loopback ports for the whole session, stopped by PID at the end."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def open_cluster(cluster: RedisCluster) -> Backend:
    """A backend on the test cluster, every master emptied."""
    cluster.flush()
    backend = from_url(cluster.url)
    await backend.open()
    return backend


async def make_backend(kind: str, tmp_path: Path) -> Backend:
    if kind == "memory":
        backend = from_url("memory://")
        await backend.open()
        return backend
    if kind == "sqlite":
        backend = from_url(f"sqlite:///{tmp_path / 'jobs.db'}")
        await backend.open()
        return backend
    return await open_redis()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "cluster":
        b = await open_cluster(request.getfixturevalue("redis_cluster"))
    else:
        b = await make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture(params=["sqlite", "redis"])
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend URL that worker processes can share: a SQLite file, or the (emptied) test Redis db."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    await (await open_redis()).close()
    return REDIS_TEST_URL


@pytest.fixture
async def memory() -> AsyncIterator[Backend]:
    """A fresh memory backend; embedded workers started on it are stopped afterwards."""
    from jobkit.run import shutdown

    backend = from_url("memory://")
    await backend.open()
    try:
        yield backend
    finally:
        await shutdown()
        await backend.close()


@pytest.fixture
def qname() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


class Watch:
    """Collects a queue's events from the moment it starts; `until` waits for one (bounded)."""

    def __init__(self, backend: Backend, queue: str) -> None:
        self.backend, self.queue = backend, queue
        self.seen: list[JobEvent] = []
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> Watch:
        self._iter = await self.backend.subscribe(self.queue)
        self._task = asyncio.ensure_future(self._pump())
        return self

    async def _pump(self) -> None:
        async for ev in self._iter:
            async with self._changed:
                self.seen.append(ev)
                self._changed.notify_all()

    async def until(self, pred: Callable[[JobEvent], bool], timeout: float = 10.0, count: int = 1) -> list[JobEvent]:
        async def check() -> list[JobEvent]:
            async with self._changed:
                while True:
                    hits = [e for e in self.seen if pred(e)]
                    if len(hits) >= count:
                        return hits
                    await self._changed.wait()

        return await asyncio.wait_for(check(), timeout)

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._iter.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def watch() -> Callable[[Backend, str], Watch]:
    return Watch
