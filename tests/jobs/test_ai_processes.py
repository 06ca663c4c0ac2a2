"""AI batches across real worker processes: a shared budget never passed by 10 calls in flight in 2 processes, the
shared rate limit held across processes, and kill -9 mid-batch: every item once in the sink, its cost counted once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs
from jobkit.jobs._quota import Budget
from jobkit.jobs.ai.prices import Price
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import FAST, batch

ROOT = Path(__file__).resolve().parents[2]
DEAR = Price(input=1000.0, output=1000.0)  # as tests/jobs/ai_worker.py prices "dear-model"


@pytest.fixture
def server() -> Iterator[FakeLLM]:
    with FakeLLM(latency=0.05) as llm:
        yield llm


class Workers:
    def __init__(self, url: str, llm: FakeLLM, roots: Path) -> None:
        self.url = url
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_FILE_ROOTS": str(roots),
                    "JOBKIT_AI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test-key",
                    "JOBKIT_AI_REQUESTS_PER_MINUTE": "100000"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, concurrency: int = 4, **env: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-m", "tests.jobs.ai_worker", self.url, str(concurrency)], cwd=ROOT,
                             env={**self.env, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    async def alive(self, backend: jobkit.Backend, n: int, timeout: float = 30.0) -> None:
        """Wait (bounded) until `n` workers heartbeat: a handle waited on before would run the job in this process."""
        async def poll() -> None:
            while len(await backend.workers(time.time(), "default")) < n:
                assert all(p.poll() is None for p in self.procs), "a worker process exited"
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), timeout)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


async def both_active(backend: jobkit.Backend, ids: list[str], timeout: float = 30.0) -> None:
    """Poll (bounded) until every job of `ids` is active."""
    async def poll() -> None:
        while True:
            jobs = [await backend.get("default", i) for i in ids]
            if all(j is not None and j.state is jobkit.JobState.ACTIVE for j in jobs):
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def wait_until(backend: jobkit.Backend, job_id: str, done: int, timeout: float = 60.0) -> jobkit.Job:
    """Poll (bounded) until the job's checkpoint has `done` items handled."""
    async def poll() -> jobkit.Job:
        while True:
            job = await backend.get("default", job_id)
            assert job is not None and not job.finished, job and job.error
            if job.checkpoint and job.checkpoint["below"] + len(job.checkpoint["handled"]) >= done:
                return job
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("latency", [0.05, 0.0], ids=["prefetch", "quick"])  # "quick": steps for several calls
async def test_a_shared_budget_holds_with_ten_calls_in_flight_in_two_processes(tmp_path: Path, kind: str,
                                                                               latency: float) -> None:
    with FakeLLM(latency=latency) as server:
        await _shared_budget(tmp_path, server, kind)


async def _shared_budget(tmp_path: Path, server: FakeLLM, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if kind == "sqlite" else os.environ.get(
        "JOBKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    backend = await jobkit.connect(url)
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        await client.flushdb()
        await client.aclose()
    workers = Workers(url, server, tmp_path)
    try:
        queue = jobkit.Queue("default", backend=backend)
        # The whole budget held at first, so that each process holds a job, waiting for room, before either calls:
        # with quick answers one job could otherwise spend it all before the other process claimed the second.
        team = Budget(backend, "default", "ai-budget:team", 1.0)
        assert (await team.reserve(1.0))[0]
        jobs = [await queue.add(jobkit.jobs.ai_batch, batch(
            80, model="dear-model", max_tokens=50, cost_limit=1.0, budget="team", concurrency=5,
            sink=f"sqlite:///out-{n}.db?table=gen")) for n in range(2)]
        workers.spawn(concurrency=1)  # one job per process: 5 calls in flight in each
        workers.spawn(concurrency=1)
        await workers.alive(backend, 2)
        await both_active(backend, [j.id for j in jobs])
        await team.settle(1.0, 0.0)
        done = [await jobkit.JobHandle(j, backend, jobkit.jobs.ai_batch).wait(timeout=120) for j in jobs]
        assert all(j.state is jobkit.JobState.COMPLETED for j in done), [j.error for j in done]
        reports = [j.result for j in done]
        assert all(r["stopped"] == "cost_limit" for r in reports)
        workers_seen = {e.worker for j in done for e in j.history if e.state is jobkit.JobState.ACTIVE}
        assert len(workers_seen) == 2, "each job ran in its own process"
        billed = server.cost(DEAR.cost)
        assert billed <= 1.0, f"the shared limit was passed: ${billed:.4f} billed"
        assert billed > 1.0 - 0.1 * 2, "the budget was used, not stopped early"
        assert sum(r["cost"] for r in reports) == pytest.approx(billed)
    finally:
        workers.stop()
        await backend.close()


@pytest.mark.slow
async def test_sigkill_mid_batch_then_resume_exactly_once(tmp_path: Path, server: FakeLLM) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    backend = await jobkit.connect(url)
    workers = Workers(url, server, tmp_path)
    n = 300
    try:
        job = await jobkit.Queue("default", backend=backend).add(jobkit.jobs.ai_batch, batch(
            n, model="dear-model", max_tokens=50, cost_limit=None, concurrency=8, batch_size=10, retry=FAST,
            sink="slowsqlite:///out.db?table=gen"))
        first = workers.spawn()
        await workers.alive(backend, 1)
        running = await wait_until(backend, job.id, done=60)
        assert running.state is jobkit.JobState.ACTIVE
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        with sqlite3.connect(tmp_path / "out.db") as conn:
            (stored,) = conn.execute("SELECT COUNT(*) FROM gen").fetchone()
        conn.close()
        assert 0 < stored < n, "the kill did not land mid-batch"

        workers.spawn()
        await workers.alive(backend, 1)
        done = await jobkit.JobHandle(job, backend, jobkit.jobs.ai_batch).wait(timeout=120)
        assert done.state is jobkit.JobState.COMPLETED, done.error
        assert done.stalls == 1 and done.attempts == 2
        report = done.result
        assert report["items_ok"] == n and report["items_failed"] == 0
        with sqlite3.connect(tmp_path / "out.db") as conn:
            keys = sorted(k for (k,) in conn.execute("SELECT key FROM gen"))
        conn.close()
        assert keys == sorted(f"term-{i}" for i in range(n)), "items lost or stored twice"
        billed = server.cost(DEAR.cost)
        interrupted = report["cost_interrupted"]
        # Every billed call is counted once; the calls the kill cut off are counted at their worst case, no more.
        assert billed - 1e-9 <= report["cost"] <= billed + interrupted + 1e-9  # sums of floats in another order
        assert server.calls - n <= 8 + 1, "at most the calls in flight at the kill were paid for again"
    finally:
        workers.stop()
        await backend.close()
