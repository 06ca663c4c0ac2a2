"""A producer and two `jobkit worker` processes on a 3-master Redis Cluster (`redis+cluster://`): every job
completes exactly once, and the queues really are spread over all three masters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from redis.crc import key_slot

import jobkit
from jobkit.models import JobState

from .servers import RedisCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
JOBS = 3000
QUEUES_PER_MASTER = 2


def queues_on_every_master(cluster: RedisCluster) -> list[str]:
    """Queue names chosen so that each master serves QUEUES_PER_MASTER of them."""
    chosen: dict[int, list[str]] = {port: [] for port in cluster.ports}
    i = 0
    while any(len(v) < QUEUES_PER_MASTER for v in chosen.values()):
        name = f"spread-{i}"
        worker = chosen[cluster.slot_owner(key_slot(f"jobkit:{{{name}}}:meta".encode()))]
        if len(worker) < QUEUES_PER_MASTER:
            worker.append(name)
        i += 1
    return [name for names in chosen.values() for name in names]


def start(args: list[str], runs: Path, log: Path) -> subprocess.Popen[str]:
    """A process of this test, its output in `log` (a pipe nobody reads would fill up and block it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_CLUSTER_RUNS": str(runs)}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True, stdout=out,
                                stderr=subprocess.STDOUT)


@pytest.mark.timeout(300)
async def test_producer_and_two_workers_run_every_job_once(redis_cluster: RedisCluster, tmp_path: Path) -> None:
    redis_cluster.flush()
    queues = queues_on_every_master(redis_cluster)
    runs = tmp_path / "runs"
    runs.mkdir()
    worker_args = ["-m", "jobkit", "worker", "tests.cluster.tasks", "--url", redis_cluster.url, "--concurrency", "8"]
    for name in queues:
        worker_args += ["--queue", name]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start(worker_args, runs, log) for log in logs]
    producer = start(["-m", "tests.cluster.produce", redis_cluster.url, str(JOBS), *queues], runs,
                     tmp_path / "producer.log")
    backend = await jobkit.connect(redis_cluster.url)
    try:
        await asyncio.to_thread(producer.wait, timeout=120)
        out = (tmp_path / "producer.log").read_text()
        assert producer.returncode == 0, out
        assert f"added {JOBS}" in out

        async def all_completed() -> list[jobkit.QueueCounts]:
            while True:
                dead = [log for p, log in zip(workers, logs, strict=True) if p.poll() is not None]
                assert not dead, dead[0].read_text()[-3000:]
                counts = [await jobkit.Queue(q, backend=backend).counts() for q in queues]
                if sum(c.completed for c in counts) >= JOBS or any(c.failed for c in counts):
                    return counts
                await asyncio.sleep(0.2)

        counts = await asyncio.wait_for(all_completed(), 120)
        assert sum(c.completed for c in counts) == JOBS
        assert not any(c.failed or c.waiting or c.active or c.delayed for c in counts), counts
        assert all(c.completed == JOBS // len(queues) for c in counts), counts

        lines = [line.split() for f in runs.iterdir() for line in f.read_text().splitlines()]
        per_job = Counter(job_id for _, job_id, _ in lines)
        assert len(per_job) == JOBS and set(per_job.values()) == {1}, per_job.most_common(3)
        per_worker = Counter(f.name for f in runs.iterdir() for _ in f.read_text().splitlines())
        assert len(per_worker) == 2 and min(per_worker.values()) > 0, per_worker  # both worker processes took jobs

        sample = await jobkit.Queue(queues[-1], backend=backend).get(f"{queues[-1]}-{JOBS - 1}")
        assert sample is not None and sample.state is JobState.COMPLETED and sample.result["n"] == JOBS - 1
    finally:
        await backend.close()
        for p in workers:
            p.terminate()
        for p, log in zip(workers, logs, strict=True):
            await asyncio.to_thread(p.wait, timeout=30)
            assert p.returncode == 0, log.read_text()[-3000:]
