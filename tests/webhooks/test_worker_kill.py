"""Real worker processes killed with SIGKILL: a job's end and its webhook delivery are one atomic step, so the
delivery is there for a sender whatever becomes of the worker (SQLite file and Redis)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.backends import from_url
from tests.webhooks.conftest import send_once, verify
from tests.webhooks.receiver import Receiver

from .tasks_for_hooks import hangs, quick

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spawn(shared_url: str) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    async def start() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "jobkit", "worker", "tests.webhooks.tasks_for_hooks", "--url", shared_url,
               "--lease", "1"]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(p)
        backend = from_url(shared_url)
        await backend.open()
        try:  # its first heartbeat (a row or key, with no event to wait on): then no embedded worker steps in
            deadline = time.monotonic() + 30
            while not any(w.pid == p.pid for w in await backend.workers(time.time(), "hooks")):
                assert time.monotonic() < deadline and p.poll() is None, "the worker sent no heartbeat in 30 s"
                await asyncio.sleep(0.05)
        finally:
            await backend.close()
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


async def _send_all(backend: jobkit.Backend, receiver: Receiver) -> dict[str, Any]:
    assert await send_once(backend, queues=["hooks"]) == 1
    [got] = receiver.wait_for(1)
    verify(got)
    return json.loads(got.body)  # type: ignore[no-any-return]


async def test_a_completion_is_delivered_after_its_worker_is_killed(shared_url: str, spawn: Any,
                                                                   receiver: Receiver) -> None:
    backend = from_url(shared_url)
    await backend.open()
    try:
        worker = await spawn()
        job = await jobkit.Queue("hooks", backend=backend).add(quick, 21, webhook=receiver.url)
        assert await jobkit.JobHandle(job, backend, quick).result(timeout=30) == 42
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        body = await _send_all(backend, receiver)
        assert body["type"] == "job.completed" and body["data"]["id"] == job.id and body["data"]["result"] == 42
    finally:
        await backend.close()


async def test_a_worker_killed_mid_job_fails_it_by_stalls_and_the_failure_is_delivered(
        shared_url: str, spawn: Any, receiver: Receiver) -> None:
    backend = from_url(shared_url)
    await backend.open()
    try:
        worker = await spawn()
        job = await jobkit.Queue("hooks", backend=backend).add(hangs, webhook=receiver.url)
        handle = jobkit.JobHandle(job, backend, hangs)

        async def started() -> None:
            async for p in handle.progress():
                if p.percent > 0:
                    return

        await asyncio.wait_for(started(), 30)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert await backend.webhook_deliveries("hooks") == []  # not ended yet
        deadline = time.monotonic() + 10
        while not (moved := await backend.recover("hooks", time.time())):  # until its 1 s lease runs out
            assert time.monotonic() < deadline, "the killed worker's lease did not run out in 10 s"
            await asyncio.sleep(0.1)  # a lease ends with time, not with an event
        [lost] = moved
        assert lost.state is jobkit.JobState.FAILED
        body = await _send_all(backend, receiver)
        assert body["type"] == "job.failed" and body["data"]["id"] == job.id and "stalled" in body["data"]["error"]
    finally:
        await backend.close()
