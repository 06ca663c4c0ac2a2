"""A queue's global concurrency holds across worker processes: two `jobkit worker` processes with 4 slots each
share one backend (a SQLite file, Redis) whose queue allows 3 active jobs; never more than 3 ran at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jobkit

from .tasks_concurrency import limited

ROOT = Path(__file__).resolve().parents[2]


def most_at_once(lines: list[str]) -> int:
    running = most = 0
    for line in lines:
        running += 1 if line.startswith("+") else -1
        most = max(most, running)
    return most


@pytest.mark.timeout(120)
async def test_global_concurrency_holds_across_worker_processes(shared_url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    backend = await jobkit.connect(shared_url)
    q = jobkit.Queue("limited", backend=backend)
    await q.set_global_concurrency(3)
    jobs = await q.add_bulk(limited, [0.2] * 12)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_RUN_LOG": str(log)}
    cmd = [sys.executable, "-m", "jobkit", "worker", "tests.reliability.tasks_concurrency", "--url", shared_url,
           "--concurrency", "4"]
    outputs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = []
    try:
        for out in outputs:
            with out.open("w") as f:
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT))
        # Both up before anyone waits on a job (else a local backend would run it here, embedded). Heartbeats are
        # rows/keys with no event to wait on: polled, bounded.
        for _ in range(600):
            if len(await backend.workers(time.time(), "limited")) == 2:
                break
            await asyncio.sleep(0.05)
        pids = [await jobkit.JobHandle(j, backend, limited).result(timeout=60) for j in jobs]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            await asyncio.to_thread(p.wait, 30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        await backend.close()
    assert [p.returncode for p in procs] == [0, 0], [out.read_text()[-2000:] for out in outputs]
    lines = log.read_text().splitlines()
    assert len(lines) == 24
    assert most_at_once(lines) == 3, lines
    assert set(pids) <= {p.pid for p in procs}
