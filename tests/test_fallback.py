"""The embedded fallback sees every job through to its end on local backends (memory, SQLite): retries with
production backoffs (3-5 s, longer than the embedded worker's 2 s idle check), delays, `retry_failed`, `resume`,
`run_sync`, and in a real kernel. On Redis with no worker, a waiter is told how to start one."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import jobkit
from jobkit.embedded import ensure_worker, shutdown
from jobkit.models import JobEvent

FAILS_LEFT: dict[str, int] = {}  # payload key -> failures still to raise


@jobkit.task(queue="fallback", attempts=3, backoff=jobkit.Backoff.fixed(3.0))
async def flaky(ctx: jobkit.Context, key: str) -> str:
    """Fails while FAILS_LEFT[key] > 0, then returns which attempt succeeded."""
    if FAILS_LEFT.get(key, 0) > 0:
        FAILS_LEFT[key] -= 1
        raise ConnectionError(f"transient failure for {key}")
    return f"{key} done on attempt {ctx.attempt}"


@pytest.fixture(params=["memory", "sqlite"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    try:
        yield "memory://fallback" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    finally:
        await shutdown()


async def _until_event(events: AsyncIterator[JobEvent], job_id: str, kind: str, timeout: float) -> JobEvent:
    async def find() -> JobEvent:
        async for ev in events:
            if ev.job_id == job_id and ev.event == kind:
                return ev
        raise AssertionError("the event stream ended")

    return await asyncio.wait_for(find(), timeout)


async def _stopped(worker: jobkit.Worker | None) -> None:
    assert worker is not None
    await asyncio.wait_for(worker._stopping.wait(), 15)


async def test_run_retries_with_a_3s_backoff_until_it_succeeds(url: str) -> None:
    FAILS_LEFT["run"] = 2
    result = await jobkit.run(flaky, "run", backend=url, timeout=30)
    assert result == "run done on attempt 3"


async def test_submitted_retry_runs_with_nobody_awaiting_it(url: str) -> None:
    """The job is delayed for its 3 s backoff with no handle waiting: the embedded worker must stay for it."""
    FAILS_LEFT["unawaited"] = 1
    backend = await jobkit.config.get_backend(url)
    events = await backend.subscribe("fallback")
    try:
        handle = await jobkit.submit(flaky, "unawaited", backend=backend)
        await _until_event(events, handle.id, "retrying", 10)
        await _until_event(events, handle.id, "completed", 15)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    job = await handle.job()
    assert job.state is jobkit.JobState.COMPLETED and job.attempts == 2


async def test_submit_with_a_delay_runs_when_due(url: str) -> None:
    backend = await jobkit.config.get_backend(url)
    events = await backend.subscribe("fallback")
    try:
        handle = await jobkit.submit(flaky, "delayed", backend=backend, delay=4)
        assert (await handle.job()).state is jobkit.JobState.DELAYED
        ended = await _until_event(events, handle.id, "completed", 15)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    job = await handle.job()
    assert job.started_at is not None and job.started_at >= job.created_at + 4 - 0.05, job
    assert ended.at >= job.created_at + 4 - 0.05


async def test_retry_failed_and_retry_run_again_after_the_worker_stopped(url: str) -> None:
    backend = await jobkit.config.get_backend(url)
    queue = jobkit.Queue("fallback", backend=backend)
    FAILS_LEFT["again"] = FAILS_LEFT["one"] = 1
    first = await jobkit.submit(flaky, "again", backend=backend, attempts=1)
    second = await jobkit.submit(flaky, "one", backend=backend, attempts=1)
    assert (await first.wait(timeout=10)).state is jobkit.JobState.FAILED
    assert (await second.wait(timeout=10)).state is jobkit.JobState.FAILED
    await _stopped(await ensure_worker(backend, "fallback"))  # nothing left: a fresh one starts and stops

    events = await backend.subscribe("fallback")
    try:
        assert await queue.retry(second.id)
        await _until_event(events, second.id, "completed", 10)
        assert await queue.retry_failed() == 1
        await _until_event(events, first.id, "completed", 10)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert (await first.job()).result == "again done on attempt 1"


async def test_resume_runs_what_waited_while_paused(url: str) -> None:
    backend = await jobkit.config.get_backend(url)
    queue = jobkit.Queue("fallback", backend=backend)
    await queue.pause()
    handle = await jobkit.submit(flaky, "paused", backend=backend)
    worker = await ensure_worker(backend, "fallback")
    assert worker is not None
    worker.keep_alive = None  # nobody awaits: a paused queue's waiting job gives it nothing to do, so it stops
    await _stopped(worker)
    assert (await handle.job()).state is jobkit.JobState.WAITING
    events = await backend.subscribe("fallback")
    try:
        await queue.resume()
        await _until_event(events, handle.id, "completed", 10)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_a_waiting_handle_starts_a_worker_again(url: str) -> None:
    """A job added with Queue.add (no fallback of its own) runs once someone awaits its handle."""
    backend = await jobkit.config.get_backend(url)
    job = await jobkit.Queue("fallback", backend=backend).add(flaky, "queued")
    handle = await jobkit.Queue("fallback", backend=backend).handle(job.id)
    assert await handle.result(timeout=10) == "queued done on attempt 1"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_run_sync_in_a_script_retries_with_a_3s_backoff(kind: str, tmp_path: Path) -> None:
    script = tmp_path / "retry.py"
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    script.write_text(textwrap.dedent(f"""
        import jobkit

        left = [2]

        @jobkit.task(queue="script", attempts=3, backoff=jobkit.Backoff.fixed(3.0))
        async def flaky(ctx, n: int) -> str:
            if left[0]:
                left[0] -= 1
                raise ConnectionError("try again")
            return f"{{n}} on attempt {{ctx.attempt}}"

        print(jobkit.run_sync(flaky, 7, backend={url!r}, timeout=30))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "7 on attempt 3"


def test_a_script_ends_with_its_embedded_worker_stopped_cleanly(tmp_path: Path) -> None:
    """At exit, run_sync's loop stops its embedded worker: no heartbeat left behind (nothing seems alive), nothing
    printed, the database closed."""
    import sqlite3

    script = tmp_path / "once.py"
    script.write_text(textwrap.dedent("""
        import jobkit

        @jobkit.task(queue="script")
        async def double(ctx, n: int) -> int:
            return 2 * n

        print(jobkit.run_sync(double, 21))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "42" and out.stderr == "", out.stderr
    with sqlite3.connect(tmp_path / ".jobkit" / "jobs.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM workers").fetchone()[0] == 0
        assert conn.execute("SELECT state FROM jobs").fetchall() == [("completed",)]
    conn.close()


async def test_redis_waiter_with_no_worker_is_told_how_to_start_one(caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import open_redis

    backend = await open_redis()
    try:
        handle = await jobkit.submit(flaky, "redis", backend=backend)
        with caplog.at_level(logging.WARNING, logger="jobkit"):
            with pytest.raises(jobkit.JobTimeout):
                await handle.result(timeout=4.5)
            with pytest.raises(jobkit.JobTimeout):  # said once, not on every wait
                await handle.result(timeout=2.5)
        said = [r.getMessage() for r in caplog.records if "no worker is running" in r.getMessage()]
        assert len(said) == 1, said
        assert "'fallback'" in said[0] and f"jobkit worker {flaky.fn.__module__} --url redis://" in said[0]
        async with jobkit.Worker([flaky], backend=backend, handle_signals=False):
            assert await handle.result(timeout=10) == "redis done on attempt 1"
    finally:
        await backend.close()
