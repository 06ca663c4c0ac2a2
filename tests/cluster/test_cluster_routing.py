"""Routing on a Redis Cluster: a seed that is down, a queue whose slot moved to another master after the
backend had read the slot map (MOVED answers make it read the map again), and masters that lost jobkit's function
library."""

from __future__ import annotations

import time

import pytest
from redis.crc import key_slot

import jobkit
from jobkit.backends import from_url
from tests.private_redis import free_port

from .servers import RedisCluster

pytestmark = pytest.mark.cluster


async def test_a_dead_seed_is_skipped(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    dead = free_port()
    backend = from_url(f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{redis_cluster.ports[1]}")
    await backend.open()
    try:
        job = await jobkit.Queue("seeded", backend=backend).add("anything", {"x": 1})
        stored = await backend.get("seeded", job.id)
        assert stored is not None and stored.data == {"x": 1}
    finally:
        await backend.close()


async def test_no_seed_answers_is_a_clear_error() -> None:
    a, b = free_port(), free_port()
    backend = from_url(f"redis+cluster://127.0.0.1:{a},127.0.0.1:{b}")
    with pytest.raises(jobkit.ConfigError, match="does not answer"):
        await backend.open()


async def test_a_queue_moved_to_another_master_keeps_working(redis_cluster: RedisCluster, watch: type) -> None:
    redis_cluster.flush()
    backend = from_url(redis_cluster.url)
    await backend.open()
    queue = jobkit.Queue("wanderer", backend=backend)
    try:
        first = [await queue.add("anything", {"i": i}) for i in range(5)]
        slot = key_slot(b"jobkit:{wanderer}:meta")
        before = redis_cluster.slot_owner(slot)
        target = next(p for p in redis_cluster.ports if p != before)
        async with watch(backend, "wanderer") as events:
            assert redis_cluster.migrate_slot(slot, target) > 0
            assert redis_cluster.slot_owner(slot) == target
            later = await queue.add("anything", {"i": 5})  # MOVED: the backend reads the slot map again
            await events.until(lambda e: e.job_id == later.id and e.event == "added")
        now = time.time()
        claimed = await backend.claim("wanderer", "me", limit=10, lease=30, now=now)
        assert sorted(j.id for j in claimed.jobs) == sorted(j.id for j in [*first, later])
        counts = await queue.counts()
        assert counts.active == 6 and counts.waiting == 0
    finally:
        await backend.close()


async def test_a_master_that_lost_the_function_library_gets_it_again(redis_cluster: RedisCluster) -> None:
    """Every master takes the library at open; one that loses it (FUNCTION FLUSH, or a restart of a Redis that keeps
    nothing on disk) is given it again by the next call that reaches it, on every master."""
    redis_cluster.flush()
    backend = from_url(redis_cluster.url)
    await backend.open()
    names = [f"lib{i}" for i in range(12)]  # queues spread over the three masters' slots
    try:
        assert {redis_cluster.slot_owner(key_slot(f"jobkit:{{{n}}}:meta".encode())) for n in names} == set(
            redis_cluster.ports)
        for port in redis_cluster.ports:
            with redis_cluster.client(port) as c:
                assert any(lib[1].startswith("jobkit_") for lib in c.function_list())
                c.function_flush()
        for n in names:
            job = await jobkit.Queue(n, backend=backend).add("anything", {"q": n})
            claimed = await backend.claim(n, "me", limit=1, lease=30, now=time.time())
            assert [j.id for j in claimed.jobs] == [job.id]
        for port in redis_cluster.ports:
            with redis_cluster.client(port) as c:
                assert any(lib[1].startswith("jobkit_") for lib in c.function_list())
    finally:
        await backend.close()
