"""submit(..., degrade=...) while the job's Redis is down: a private redis-server stopped and started by PID mid-run.

"spool" keeps jobs in the local spool (a 0600 SQLite file) and forwards them when Redis answers again, each once;
"inline" runs them in this process at once."""

from __future__ import annotations

import asyncio
import stat
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import jobkit
from jobkit import spool
from jobkit.cli import main
from jobkit.run import INLINE_URL, shutdown
from tests.private_redis import RedisServer

ran: Counter[int] = Counter()


@jobkit.task(queue="degrade-test")
async def square(ctx: jobkit.Context, n: int) -> int:
    ran[n] += 1
    return n * n


@pytest.fixture(autouse=True)
def spool_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "spool" / "spool.db"
    monkeypatch.setenv(spool.ENV, str(path))
    ran.clear()
    yield path


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis that writes every change to disk, so a restart keeps the jobs it had."""
    with RedisServer(tmp_path, persist=True) as server:
        yield server


@pytest.fixture
async def cleanup() -> AsyncIterator[None]:
    yield
    await shutdown()


async def run_worker_until(backend: jobkit.Backend, handles: list[jobkit.JobHandle[int]]) -> list[int]:
    worker = jobkit.Worker([square], backend=backend)
    task = asyncio.create_task(worker.run())
    try:
        return [await h.result(timeout=30) for h in handles]
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def test_spooled_while_down_forwarded_once_when_back(redis: RedisServer, spool_file: Path,
                                                           cleanup: None) -> None:
    url = redis.url()
    before = await jobkit.submit(square, 1, backend=url, degrade="spool")
    assert spool.spool_size() == 0 and not spool_file.exists(), "a job Redis took was spooled"

    redis.stop()
    handles = [await jobkit.submit(square, n, backend=url, degrade="spool") for n in (2, 3, 4)]
    assert jobkit.spool_size() == 3
    assert stat.S_IMODE(spool_file.stat().st_mode) == 0o600
    assert {h.last.state for h in handles} == {jobkit.JobState.WAITING}
    assert spool.targets() == {url: 3}
    forwarder = spool.forwarder(handles[0].backend)
    assert forwarder is not None and not forwarder.done()
    with pytest.raises(jobkit.BackendUnavailable):
        await handles[0].result(timeout=10)  # said at once, not waited out

    redis.start()
    await redis.ready()
    assert await asyncio.wait_for(forwarder, 30) == 3
    assert jobkit.spool_size() == 0
    assert await jobkit.flush_spool(url) == 0, "nothing left to forward"

    backend = handles[0].backend
    assert [(await backend.get("degrade-test", h.id)) is not None for h in handles] == [True] * 3
    assert await run_worker_until(backend, [before, *handles]) == [1, 4, 9, 16]
    assert ran == Counter({1: 1, 2: 1, 3: 1, 4: 1}), "a job ran twice or not at all"


async def test_a_job_forwarded_twice_is_still_one_job(redis: RedisServer, cleanup: None) -> None:
    """A forwarder cut short between Redis taking a job and the spool dropping it forwards it again: same id, no
    second job, no second run."""
    url = redis.url()
    handle = await jobkit.submit(square, 5, backend=url, degrade="spool")
    assert await run_worker_until(handle.backend, [handle]) == [25]
    spool.put(handle.backend, [handle.last.model_copy(update={"state": jobkit.JobState.WAITING, "result": None})])
    assert jobkit.spool_size() == 1
    assert await jobkit.flush_spool(url) == 1
    assert jobkit.spool_size() == 0
    job = await handle.job()
    assert job.state is jobkit.JobState.COMPLETED and job.result == 25
    assert (await jobkit.Queue("degrade-test", backend=handle.backend).counts()).total == 1
    assert ran[5] == 1


async def test_inline_runs_the_job_here_when_redis_is_down(redis: RedisServer, cleanup: None) -> None:
    url = redis.url()
    redis.stop()
    assert await jobkit.run(square, 6, backend=url, degrade="inline", timeout=30) == 36
    handle = await jobkit.submit(square, 7, backend=url, degrade="inline", job_id="inline-7")
    assert handle.id == "inline-7" and handle.backend.url == INLINE_URL
    assert await handle.result(timeout=30) == 49
    assert jobkit.spool_size() == 0 and ran == Counter({6: 1, 7: 1})
    with pytest.raises(jobkit.BackendUnavailable, match="does not answer"):
        await jobkit.submit(square, 8, backend=url)


async def test_degrade_is_checked(cleanup: None, tmp_path: Path) -> None:
    with pytest.raises(jobkit.ConfigError, match="degrade can only be 'inline'"):
        await jobkit.run(square, 1, degrade="spool")  # type: ignore[arg-type]
    with pytest.raises(jobkit.ConfigError, match="degrade is 'inline'"):
        await jobkit.submit(square, 1, degrade="later")  # type: ignore[arg-type]
    local = f"sqlite:///{tmp_path / 'jobs.db'}"  # a local backend is always there: degrade changes nothing
    assert await (await jobkit.submit(square, 2, backend=local, degrade="spool")).result(timeout=30) == 4
    assert jobkit.spool_size() == 0


def test_cli_flushes_and_counts_the_spool(redis: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = redis.url()
    redis.stop()

    async def spool_two() -> list[str]:
        try:
            return [(await jobkit.submit(square, n, backend=url, degrade="spool")).id for n in (1, 2)]
        finally:
            await shutdown()  # the process ends: its forwarder stops, the jobs stay spooled

    ids = asyncio.run(spool_two())
    assert main(["spool", "status"]) == 0
    assert f"2 job(s) for {url}" in capsys.readouterr().out
    assert main(["spool", "flush", "--url", url]) == 2
    assert "does not answer" in capsys.readouterr().err
    redis.start()
    redis.wait_ready()
    assert main(["spool", "flush", "--url", url]) == 0
    assert capsys.readouterr().out.startswith(f"forwarded 2 job(s) to {url}")
    assert jobkit.spool_size() == 0

    async def stored() -> list[bool]:
        backend = await jobkit.connect(url)
        try:
            return [(await backend.get("degrade-test", i)) is not None for i in ids]
        finally:
            await backend.close()

    assert asyncio.run(stored()) == [True, True]


async def test_an_email_is_sent_at_once_when_redis_is_down(redis: RedisServer, cleanup: None) -> None:
    pytest.importorskip("aiosmtpd")
    import jobkit.jobs
    from jobkit.jobs.mail.testing import MailCatcher

    url = redis.url()
    redis.stop()
    with MailCatcher() as smtp:
        jobkit.jobs.register_smtp_server("degrade", host="127.0.0.1", port=smtp.port, security="none",
                                         sender="alerts@example.com")
        report = await jobkit.run(jobkit.jobs.send_email, {
            "server": "degrade", "recipients": [{"to": "oncall@example.com"}], "subject": "Redis is down",
            "text": "and this still arrived"}, backend=url, degrade="inline", timeout=30)
        assert report.sent == 1
        assert [d.recipients for d in smtp.delivered] == [["oncall@example.com"]]


async def test_health_is_degraded_while_the_spool_holds_jobs(redis: RedisServer, cleanup: None) -> None:
    url = redis.url()
    handle = await jobkit.submit(square, 9, backend=url, degrade="spool")
    assert (await jobkit.health(url, queues=[])).status == "healthy"
    spool.put(handle.backend, [handle.last.model_copy(update={"id": "spooled-9"})])
    report = await jobkit.health(url, queues=[])
    assert report.status == "degraded" and report.spooled == 1
    assert any("1 job(s) in the local spool" in p for p in report.problems)
    redis.stop()
    down = await jobkit.health(url, queues=[])
    assert (down.status, down.backend_reachable, down.spooled) == ("unhealthy", False, 1)
    redis.start()
    await redis.ready()
    assert await jobkit.flush_spool(url) == 1
    assert (await jobkit.health(url, queues=[])).status == "healthy"
