"""Exactly one job per tick across worker processes: 3 `jobkit worker` processes serve a 1-second schedule for
30 s on one backend, one of them is killed -9 half-way, and every second's tick ran once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

import jobkit

ROOT = Path(__file__).resolve().parents[2]
RUN_FOR = 30.0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_three_processes_fire_each_second_once_even_when_one_is_killed(shared_url: str, tmp_path: Path) -> None:
    log = tmp_path / "ticks.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_TICK_LOG": str(log)}
    cmd = [sys.executable, "-m", "jobkit", "worker", "tests.reliability.tasks_scheduled", "--url", shared_url]
    outputs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    procs = []
    for out in outputs:
        with out.open("w") as f:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT))
    try:
        await asyncio.sleep(RUN_FOR / 2)
        procs[0].send_signal(signal.SIGKILL)
        await asyncio.sleep(RUN_FOR / 2)
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            await asyncio.to_thread(p.wait, 30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert [p.returncode for p in procs[1:]] == [0, 0], [out.read_text()[-2000:] for out in outputs]

    lines = [ln.split() for ln in log.read_text().splitlines()]
    ran = Counter(job_id for job_id, _ in lines)
    assert all(n == 1 for n in ran.values()), [j for j, n in ran.items() if n > 1]
    seconds = sorted(datetime.fromisoformat(j.split("@")[1].replace("Z", "+00:00")).timestamp() for j in ran)
    assert seconds == [seconds[0] + i for i in range(len(seconds))], "a second was skipped"
    assert RUN_FOR - 5 <= len(seconds) <= RUN_FOR + 1, len(seconds)  # minus the workers' start-up
    assert len({pid for _, pid in lines}) >= 2, "the ticks were shared by the workers"

    backend = await jobkit.connect(shared_url)
    try:
        jobs = await jobkit.Queue("ticks", backend=backend).jobs(limit=1000)
        assert sorted(j.id for j in jobs) == sorted(ran), "one job per tick, all of them run"
        s = await jobkit.Queue("ticks", backend=backend).get_schedule("every_second")
        assert s is not None and s.fired == len(jobs) and s.next_at > time.time() - 2
    finally:
        await backend.close()
