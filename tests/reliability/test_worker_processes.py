"""Real worker processes on one SQLite file: kill -9 mid-job, SIGTERM with and without enough grace."""

from __future__ import annotations

import asyncio
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
from jobkit.models import Job, JobState
from jobkit.watchdog import EXIT_CODE
from jobkit.worker import STOP_MARGIN

from .tasks_for_kill import (
    blocks_the_loop,
    exits,
    hang_first_time,
    ignores_cancellation,
    returns_pid,
    takes_a_moment,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


def _spawner(url: str) -> Iterator[Any]:
    """Start `jobkit worker` processes on `url`; kill whatever is left at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "jobkit", "worker", "tests.reliability.tasks_for_kill", "--url", url, *extra]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        if p.stdout:
            p.stdout.close()


@pytest.fixture
def spawn(url: str) -> Iterator[Any]:
    yield from _spawner(url)


async def wait_progress(backend: jobkit.Backend, job_id: str, timeout: float = 30) -> jobkit.Job:
    """Wait (bounded) until a worker process has reported progress on the job."""
    handle = jobkit.JobHandle((await backend.get("reliability", job_id)), backend)  # type: ignore[arg-type]
    import asyncio

    async def first_progress() -> None:
        async for p in handle.progress():
            if p.percent > 0:
                return

    await asyncio.wait_for(first_progress(), timeout)
    return await handle.job()


async def wait_worker(backend: jobkit.Backend, pid: int, timeout: float = 30) -> None:
    """Wait (bounded) until the worker process `pid` has sent its first heartbeat."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not any(w.pid == pid for w in await backend.workers(time.time(), "reliability")):
        assert time.monotonic() < deadline, f"worker {pid} sent no heartbeat in {timeout}s"
        await asyncio.sleep(0.05)  # heartbeats are rows/keys, with no event to wait on


@pytest.fixture
def spawn_on(shared_url: str) -> Iterator[Any]:
    yield from _spawner(shared_url)


@pytest.mark.slow
async def test_kill_9_mid_job_another_worker_completes(shared_url: str, spawn_on: Any) -> None:
    spawn, url = spawn_on, shared_url
    backend = await jobkit.connect(url)
    q = jobkit.Queue("reliability", backend=backend)
    job = await q.add(hang_first_time, "precious")
    first = spawn("--lease", "1")
    running = await wait_progress(backend, job.id)
    assert running.state is JobState.ACTIVE and running.worker is not None and str(first.pid) in running.worker
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = spawn("--lease", "1")
    done = await jobkit.JobHandle(job, backend).wait(timeout=60)
    assert done.state is JobState.COMPLETED
    assert done.result == {"label": "precious", "pid": second.pid, "attempt": 2}
    assert done.stalls == 1 and done.attempts == 2
    story = [(h.state, h.worker) for h in done.history]
    assert [s for s, _ in story] == [JobState.WAITING, JobState.ACTIVE, JobState.WAITING, JobState.ACTIVE,
                                     JobState.COMPLETED]
    assert str(first.pid) in (story[1][1] or "") and str(second.pid) in (story[3][1] or "")
    assert "expired" in done.history[2].note and str(first.pid) in done.history[2].note
    await backend.close()


@pytest.mark.slow
async def test_kill_9_with_jobs_claimed_ahead_another_worker_runs_them(shared_url: str, spawn_on: Any) -> None:
    """A worker with one running job and two claimed ahead of its slot (--prefetch 2) is killed -9: their leases
    expire, and the next worker runs all three; the two that never started count a stall and an attempt, as a
    running job's would."""
    spawn, url = spawn_on, shared_url
    backend = await jobkit.connect(url)
    q = jobkit.Queue("reliability", backend=backend)
    first = spawn("--lease", "1", "--concurrency", "1", "--prefetch", "2")
    await wait_worker(backend, first.pid)  # else, on SQLite, the wait below starts an embedded worker of its own
    warm = await q.add(returns_pid)  # a short job first: claims go ahead only once jobs are known short
    assert (await jobkit.JobHandle(warm, backend).wait(timeout=30)).state is JobState.COMPLETED
    hung = await q.add(hang_first_time, "held")
    ahead = [await q.add(returns_pid) for _ in range(2)]
    await wait_progress(backend, hung.id)
    deadline = time.monotonic() + 30
    while (await q.counts()).active < 3:
        assert time.monotonic() < deadline, "the worker did not claim two jobs ahead of its slot"
        await asyncio.sleep(0.05)  # the claim is a row/key change, with no event to wait on
    holders = {job.worker for job in [await q.get(j.id) for j in [hung, *ahead]] if job is not None}
    assert len(holders) == 1 and str(first.pid) in str(holders.pop())
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = spawn("--lease", "1")
    for job in [hung, *ahead]:
        done = await jobkit.JobHandle(job, backend).wait(timeout=60)
        assert done.state is JobState.COMPLETED and done.stalls == 1 and done.attempts == 2, done
    assert [(await q.get(j.id)).result for j in ahead] == [second.pid, second.pid]  # type: ignore[union-attr]
    await backend.close()


@pytest.mark.slow
async def test_system_exit_in_a_task_fails_the_job_not_the_worker(shared_url: str, spawn_on: Any) -> None:
    """sys.exit() and KeyboardInterrupt in a task fail its attempts, counted, with the error kept; the worker
    process stays alive and runs the next job."""
    backend = await jobkit.connect(shared_url)
    q = jobkit.Queue("reliability", backend=backend)
    worker = spawn_on()
    await wait_worker(backend, worker.pid)  # else a waiting handle on SQLite would run the jobs in this process
    by_exit, by_interrupt = await q.add(exits, "sys.exit"), await q.add(exits, "KeyboardInterrupt")
    for job, error in ((by_exit, f"SystemExit: gave up in pid {worker.pid}"), (by_interrupt, "KeyboardInterrupt")):
        done = await jobkit.JobHandle(job, backend).wait(timeout=30)
        assert done.state is JobState.FAILED and done.attempts == 2 and done.error == error
        assert done.traceback is not None and "in exits" in done.traceback
    assert worker.poll() is None, "the worker process died"
    after = await q.add(takes_a_moment, 0.01)
    assert await jobkit.JobHandle(after, backend, takes_a_moment).result(timeout=30) == worker.pid
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    out = worker.stdout.read() if worker.stdout else ""
    assert "attempt 2 failed after" in out and "will retry in 0.0s (attempt 2 of 2)" in out
    await backend.close()


@pytest.mark.slow
async def test_sigterm_lets_running_job_finish(url: str, spawn: Any) -> None:
    backend = await jobkit.connect(url)
    job = await jobkit.Queue("reliability", backend=backend).add(takes_a_moment, 1.0)
    worker = spawn("--grace", "30")
    await wait_progress(backend, job.id)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    done = await backend.get("reliability", job.id)
    assert done is not None and done.state is JobState.COMPLETED and done.result == worker.pid
    out = worker.stdout.read() if worker.stdout else ""
    assert "got SIGTERM" in out and "completed in" in out and job.id in out
    await backend.close()


@pytest.mark.slow
async def test_sigterm_hands_back_jobs_that_outlive_the_grace(url: str, spawn: Any) -> None:
    backend = await jobkit.connect(url)
    job = await jobkit.Queue("reliability", backend=backend).add(takes_a_moment, 3600)
    worker = spawn("--grace", "0.5")
    await wait_progress(backend, job.id)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    back = await backend.get("reliability", job.id)
    assert back is not None and back.state is JobState.WAITING and back.worker is None
    assert back.history[-1].note.startswith("handed back")
    await backend.close()


SLACK = 3.0  # seconds allowed on top of a bound for process teardown on a busy machine


async def _sigterm_a_stubborn_task(
    url: str, spawn: Any, loop: str, task: jobkit.Task[Any]
) -> tuple[Job, str, int]:
    """Run `task` in a worker with --grace 1, SIGTERM it once the task reports progress, and check that the process
    ends by grace + STOP_MARGIN with the watchdog's exit code. Returns the job as left, the output and the pid."""
    backend = await jobkit.connect(url)
    try:
        job = await jobkit.Queue("reliability", backend=backend).add(task)
        worker = spawn("--grace", "1", "--loop", loop)
        await wait_progress(backend, job.id)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=1 + STOP_MARGIN + 30) == EXIT_CODE
        assert time.monotonic() - started < 1 + STOP_MARGIN + SLACK
        left = await backend.get("reliability", job.id)
        assert left is not None
        return left, (worker.stdout.read() if worker.stdout else ""), worker.pid
    finally:
        await backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_sigterm_is_bounded_when_a_task_ignores_cancellation(url: str, spawn: Any, loop: str) -> None:
    """The worker hands the job back and its process ends by grace + STOP_MARGIN, though the task catches every
    CancelledError (the watchdog ends the process, whose loop would wait for that task forever)."""
    back, out, _ = await _sigterm_a_stubborn_task(url, spawn, loop, ignores_cancellation)
    assert back.state is JobState.WAITING and back.history[-1].note.startswith("handed back")
    assert "ignored cancellation" in out and "has not stopped" in out


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_sigterm_is_bounded_when_a_task_blocks_the_loop(url: str, spawn: Any, loop: str) -> None:
    """Blocking code cannot be pre-empted in-process, yet the process ends by grace + STOP_MARGIN; the job keeps
    its lease, so it runs again once the lease expires."""
    held, out, pid = await _sigterm_a_stubborn_task(url, spawn, loop, blocks_the_loop)
    assert held.state is JobState.ACTIVE and str(pid) in (held.worker or "")
    assert "has not stopped 6.0s after the stop signal" in out


async def test_concurrency_limit_is_respected(tmp_path: Path) -> None:
    import asyncio

    running, peak = 0, 0

    @jobkit.task(name="conc.probe")
    async def probe(ctx: jobkit.Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    backend = await jobkit.connect(f"sqlite:///{tmp_path / 'c.db'}")
    q = jobkit.Queue("conc", backend=backend)
    jobs = await q.add_bulk(probe, [None] * 40)
    async with jobkit.Worker([probe], backend=backend, queues=["conc"], concurrency=3, handle_signals=False):
        for j in jobs:
            await jobkit.JobHandle(j, backend).wait(timeout=30)
    assert peak == 3
    await backend.close()
