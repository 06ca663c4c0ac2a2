"""run / run_sync / submit: the synchronous fallback runs jobs in-process when no worker is alive."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import jobkit
from jobkit.models import JobState, WorkerInfo
from jobkit.run import ensure_worker, shutdown


class Numbers(BaseModel):
    values: list[float]


class Stats(BaseModel):
    total: float
    count: int


@jobkit.task(queue="run-tests", attempts=2, backoff=0)
async def summarise(ctx: jobkit.Context, payload: Numbers) -> Stats:
    await ctx.progress(50, "adding")
    if not payload.values:
        raise jobkit.Unrecoverable("no values to summarise")
    return Stats(total=sum(payload.values), count=len(payload.values))


@pytest.fixture(params=["memory", "sqlite"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A backend URL; embedded workers the test started are stopped, and backends closed, before its loop ends
    (else a SQLite write still under way at that moment fails in aiosqlite's thread)."""
    try:
        yield "memory://run-tests" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    finally:
        await shutdown()


async def test_run_returns_typed_result_via_embedded_worker(url: str) -> None:
    result = await jobkit.run(summarise, {"values": [1, 2, 3.5]}, backend=url, timeout=10)
    assert result == Stats(total=6.5, count=3)


async def test_submit_returns_handle_and_job_runs_in_background(url: str) -> None:
    handle = await jobkit.submit(summarise, Numbers(values=[4]), backend=url)
    job = await handle.wait(timeout=10)
    assert job.state is JobState.COMPLETED and job.result == {"total": 4.0, "count": 1}
    assert (await handle).count == 1


async def test_run_raises_job_failed_with_reason(url: str) -> None:
    with pytest.raises(jobkit.JobFailed, match="no values to summarise") as info:
        await jobkit.run(summarise, {"values": []}, backend=url, timeout=10)
    assert info.value.job.attempts == 1


async def test_run_invalid_payload_queues_nothing(url: str) -> None:
    queue = jobkit.Queue("run-tests", backend=url)
    before = (await queue.counts()).total
    with pytest.raises(jobkit.PayloadError, match="summarise"):
        await jobkit.run(summarise, {"values": "abc"}, backend=url)
    assert (await queue.counts()).total == before


def test_run_sync_inside_running_loop(tmp_path: Path) -> None:
    # A coroutine calling run_sync is a running loop, like a notebook cell; the job runs on that same loop.
    # In a subprocess: nest-asyncio2 patches asyncio for the whole process, as it does in a kernel.
    script = tmp_path / "nested.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio
        import jobkit

        @jobkit.task(queue="nested")
        async def add(ctx, pair: list[int]) -> int:
            await ctx.progress(100, "added")
            return sum(pair)

        async def cell():
            url = "sqlite:///{tmp_path / 'nested.db'}"
            first = jobkit.run_sync(add, [10, 20], backend=url, timeout=10)
            second = await jobkit.run(add, [1, 2], backend=url, timeout=10)
            print(first, second)

        asyncio.run(cell())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["30", "3"]


def test_run_sync_in_plain_script(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import jobkit

        @jobkit.task(queue="script")
        async def square(ctx, n: int) -> int:
            await ctx.progress(100, "squared")
            return n * n

        url = "sqlite:///{tmp_path / 'script.db'}"
        print(jobkit.run_sync(square, 7, backend=url, timeout=10))
        print(jobkit.run_sync(square, 8, backend=url, timeout=10))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["49", "64"]


async def test_no_embedded_worker_when_a_real_worker_is_alive() -> None:
    backend = await jobkit.connect("memory://")
    await backend.heartbeat(WorkerInfo(id="elsewhere", queues=["run-tests"]), ttl=60)
    assert await ensure_worker(backend, "run-tests") is None
    handle = await jobkit.submit(summarise, {"values": [1]}, backend=backend)
    assert (await handle.job()).state is JobState.WAITING, "the live worker, not this process, should run it"


async def test_submit_beside_a_worker_of_this_process_asks_the_backend_for_no_workers(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop submitting job after job while this process's own Worker serves the queue: that worker is known
    alive here, so no submit reads the workers' heartbeats (on SQLite, a trip to the file each); once it has
    stopped, submit asks again and starts an embedded worker."""
    backend = await jobkit.config.get_backend(url)
    asked: list[str | None] = []
    workers = backend.workers

    async def counted(now: float, queue: str | None = None) -> list[WorkerInfo]:
        asked.append(queue)
        return await workers(now, queue)

    monkeypatch.setattr(backend, "workers", counted)
    async with jobkit.Worker([summarise], backend=backend, handle_signals=False):
        handles = [await jobkit.submit(summarise, {"values": [i]}, backend=backend) for i in range(5)]
        assert [await h.result(timeout=10) for h in handles] == [Stats(total=i, count=1) for i in range(5)]
    assert asked == []
    handle = await jobkit.submit(summarise, {"values": [7]}, backend=backend)
    assert asked == ["run-tests"]
    assert await handle.result(timeout=10) == Stats(total=7, count=1)


async def test_embedded_worker_stops_when_idle(url: str) -> None:
    backend = await jobkit.config.get_backend(url)
    worker = await ensure_worker(backend, "run-tests")
    assert worker is not None and worker.embedded
    await asyncio.wait_for(worker._stopping.wait(), timeout=10)


async def test_redis_url_unreachable_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBKIT_URL", raising=False)
    monkeypatch.delenv("JOBKIT_REQUIRE_REDIS", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0?socket_connect_timeout=0.5")
    with caplog.at_level(logging.WARNING, logger="jobkit"):
        backend = await jobkit.connect()
        again = await jobkit.connect()
    assert backend.url == again.url == jobkit.config.DEFAULT_URL
    warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1 and "JOBKIT_REQUIRE_REDIS" in warnings[0].getMessage()
    assert (tmp_path / ".jobkit" / "jobs.db").exists()
    await backend.close()
    await again.close()


async def test_redis_url_unreachable_is_an_error_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBKIT_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0?socket_connect_timeout=0.5")
    monkeypatch.setenv("JOBKIT_REQUIRE_REDIS", "1")
    with pytest.raises(jobkit.ConfigError, match=r"127\.0\.0\.1:1"):
        await jobkit.connect()


async def test_explicit_url_never_falls_back() -> None:
    with pytest.raises(jobkit.ConfigError):
        await jobkit.connect("redis://127.0.0.1:1/0?socket_connect_timeout=0.5")


async def test_job_timeout_says_what_to_check() -> None:
    backend = await jobkit.connect("memory://")
    await backend.heartbeat(WorkerInfo(id="busy-elsewhere", queues=["run-tests"]), ttl=60)
    handle = await jobkit.submit(summarise, {"values": [1]}, backend=backend)
    started = time.monotonic()
    with pytest.raises(jobkit.JobTimeout, match="is a worker running for queue 'run-tests'"):
        await handle.result(timeout=0.2)
    assert time.monotonic() - started < 5


async def test_progress_the_backend_cannot_store_does_not_fail_the_job(
    memory: jobkit.Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Progress is advisory: a backend error while storing it (Redis restarting) is logged, the job completes."""
    async def unavailable(*args: object) -> bool:
        raise jobkit.BackendError("Redis is restarting")

    monkeypatch.setattr(memory, "set_progress", unavailable)

    @jobkit.task(queue="advisory")
    async def reports(ctx: jobkit.Context, n: int) -> int:
        for i in range(3):
            await ctx.progress(50 * i, "working")
        return n * 2

    with caplog.at_level(logging.WARNING, logger="jobkit.worker"):
        assert await jobkit.run(reports, 21, backend=memory, timeout=10) == 42
    assert any("could not store progress" in r.getMessage() for r in caplog.records)


async def test_a_task_defined_after_the_embedded_worker_started_runs_too(url: str) -> None:
    """A notebook cell defines a task while the queue's embedded worker is busy: it runs that task's jobs too."""
    release = asyncio.Event()
    queue = f"late-{uuid.uuid4().hex[:6]}"

    @jobkit.task(queue=queue, name=f"{queue}.first")
    async def first(ctx: jobkit.Context) -> str:
        await asyncio.wait_for(release.wait(), 10)
        return "first"

    busy = await jobkit.submit(first, backend=url)
    worker = await ensure_worker(await jobkit.config.get_backend(url), queue)
    assert worker is not None and set(worker.tasks) == {f"{queue}.first"}

    @jobkit.task(queue=queue, name=f"{queue}.second")
    async def second(ctx: jobkit.Context) -> str:
        return "second"

    assert await jobkit.run(second, backend=url, timeout=10) == "second"
    release.set()
    assert await busy.result(timeout=10) == "first"
