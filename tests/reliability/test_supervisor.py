"""`jobkit worker --processes N`: real supervisor and worker processes on one SQLite file."""

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
from jobkit.errors import ConfigError
from jobkit.models import JobState
from jobkit.supervisor import BACKOFF_FIRST, Supervisor, parse_processes
from jobkit.worker import STOP_MARGIN

from .tasks_for_kill import takes_a_moment

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "reliability"


async def live_pids(backend: jobkit.Backend, want: int, other_than: set[int] = frozenset(),  # type: ignore[assignment]
                    timeout: float = 30) -> set[int]:
    """Wait (bounded) until `want` worker processes not in `other_than` send heartbeats; their pids."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {w.pid for w in await backend.workers(time.time(), QUEUE)} - other_than
        if len(pids) >= want:
            return pids
        assert time.monotonic() < deadline, f"{len(pids)} of {want} worker processes sent heartbeats in {timeout}s"
        await asyncio.sleep(0.05)  # heartbeats are rows, with no event to wait on


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_a_killed_child_is_restarted_and_sigterm_stops_them_all_within_grace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    grace = 3.0
    cmd = [sys.executable, "-m", "jobkit", "worker", "tests.reliability.tasks_for_kill", "--url", url,
           "--processes", "2", "--grace", str(grace)]
    sup = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    backend = await jobkit.connect(url)
    children: set[int] = set()
    try:
        first = await live_pids(backend, 2)
        assert sup.pid not in first  # the supervisor runs no jobs itself
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        replacement = await live_pids(backend, 1, other_than=first)
        assert alive(max(first)) and not alive(victim)
        children = first | replacement
        # Both processes take work; a job running at SIGTERM is finished within the grace.
        q = jobkit.Queue(QUEUE, backend=backend)
        job = await q.add(takes_a_moment, 1.0)
        handle = jobkit.JobHandle(job, backend, takes_a_moment)

        async def started() -> None:
            async for p in handle.progress():
                if p.percent > 0:
                    return

        await asyncio.wait_for(started(), 30)
        stopped_at = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(sup.wait, grace + STOP_MARGIN + 5) == 0
        assert time.monotonic() - stopped_at < grace + STOP_MARGIN
        done = await handle.wait(timeout=5)
        assert done.state is JobState.COMPLETED and done.result in children - {victim}
        assert not [pid for pid in children if alive(pid)], "a worker process outlived its supervisor"
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(timeout=10)
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        out = sup.stdout.read() if sup.stdout else ""
        if sup.stdout:
            sup.stdout.close()
        await backend.close()
    assert f"worker process {victim} exited with status -9" in out and "restarting it in" in out


async def test_a_crash_loop_is_restarted_with_growing_waits() -> None:
    """A child that exits at once is restarted after 0.5 s, then 1 s, 2 s...: three starts in 2.5 s, not hundreds."""
    sup = Supervisor([sys.executable, "-c", "raise SystemExit(3)"], processes=1, grace=1.0)
    run = asyncio.ensure_future(sup.run())
    done, _ = await asyncio.wait((run,), timeout=BACKOFF_FIRST * 5)
    assert not done
    sup.stop()
    assert await asyncio.wait_for(run, 10) == 1
    assert 1 <= sup.restarts <= 3


async def test_sigterm_reaches_a_child_that_ignores_it_then_it_is_killed() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    sup = Supervisor([sys.executable, "-c", code], processes=2, grace=0.0)
    sup.deadline = 0.5  # the child's own deadline would be grace + STOP_MARGIN
    run = asyncio.ensure_future(sup.run())

    async def both_started() -> None:
        while len(sup.children) < 2:
            await asyncio.sleep(0.01)  # the supervisor's own bookkeeping, with no event to wait on

    await asyncio.wait_for(both_started(), 10)
    pids = [c.pid for c in sup.children.values()]
    started = time.monotonic()
    sup.stop()
    assert await asyncio.wait_for(run, 10) == 1  # killed, not stopped cleanly
    assert time.monotonic() - started < 5
    assert not [pid for pid in pids if alive(pid)]


def test_processes_option() -> None:
    assert parse_processes("3") == 3
    assert parse_processes("auto") == (os.cpu_count() or 1)
    for bad in ("0", "-2", "many"):
        with pytest.raises(ConfigError, match="--processes"):
            parse_processes(bad)
