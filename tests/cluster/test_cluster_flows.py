"""Flows across hash slots of a Redis Cluster: a child's end reaches its parent on another master in a second step,
and a worker killed between the two steps delays that, never loses it or counts it twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.crc import key_slot

import jobkit
from jobkit.backends import from_url
from jobkit.backends.redis import RedisBackend, _command, _pack
from jobkit.models import JobState

from .flow_worker import flow_child, flow_parent
from .servers import RedisCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def two_queues_on_two_masters(cluster: RedisCluster) -> tuple[str, str]:
    owners: dict[int, str] = {}
    i = 0
    while len(owners) < 2:
        name = f"flowq-{i}"
        owners.setdefault(cluster.slot_owner(key_slot(f"jobkit:{{{name}}}:meta".encode())), name)
        i += 1
    first, second = owners.values()
    return first, second


async def outbox(backend: RedisBackend, queue: str) -> list[str]:
    q = backend._q(queue)
    [members] = await backend._send(q.slot, [_command(_pack(("ZRANGE", q.outbox, 0, -1)))], "read")
    return list(members)


@pytest.mark.timeout(120)
async def test_worker_killed_between_child_end_and_parent_count(redis_cluster: RedisCluster, tmp_path: Path) -> None:
    redis_cluster.flush()
    parents, children = two_queues_on_two_masters(redis_cluster)
    backend = from_url(redis_cluster.url)
    assert isinstance(backend, RedisBackend)
    await backend.open()
    try:
        h = await jobkit.flow(flow_parent, None, children=[(flow_child, 4, {"queue": children, "job_id": "c4"})],
                              queue=parents, job_id="p", backend=backend)
        assert h.last.state is JobState.WAITING_CHILDREN
        log = tmp_path / "worker.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.flow_worker", redis_cluster.url, children],
                                    cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                                    stderr=subprocess.STDOUT)
        assert await asyncio.to_thread(proc.wait, 60) == -9, log.read_text()
        child = await backend.get(children, "c4")
        assert child is not None and child.state is JobState.COMPLETED and child.result == 40
        parent = await h.job()
        assert parent.state is JobState.WAITING_CHILDREN and parent.flow is not None and parent.flow.completed == 0
        [notice] = await outbox(backend, children)
        assert json.loads(notice)["k"] == "e" and json.loads(notice)["q"] == parents

        assert await backend.redeliver(children, time.time() + 5) == 1, "maintenance delivers what the dead left"
        assert await outbox(backend, children) == []
        parent = await h.job()
        assert parent.state is JobState.WAITING and parent.flow is not None and parent.flow.completed == 1
        # the same notice again (a worker that delivered it died before removing it): counted once
        await backend._deliver_notices(children, [notice])
        parent = await h.job()
        assert parent.flow is not None and (parent.flow.completed, parent.flow.total) == (1, 1)
        assert parent.state is JobState.WAITING

        async with jobkit.Worker([flow_parent, flow_child], backend=backend, queues=[parents, children],
                                 handle_signals=False):
            assert await h.result(timeout=20) == [40]
        [c] = await h.children()
        assert (c.queue, c.state, c.result) == (children, JobState.COMPLETED, 40)
    finally:
        await backend.close()


@pytest.mark.timeout(120)
async def test_cancel_reaches_children_on_other_masters(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    parents, children = two_queues_on_two_masters(redis_cluster)
    backend = from_url(redis_cluster.url)
    await backend.open()
    try:
        h = await jobkit.flow(flow_parent, None, queue=parents, backend=backend,
                              children=[(flow_child, n, {"queue": children}) for n in range(50)])
        await h.cancel()
        states = {c.state for c in await h.children()}
        assert states == {JobState.CANCELLED}
        assert (await jobkit.Queue(children, backend=backend).counts()).cancelled == 50
    finally:
        await backend.close()
