"""SQLite-only behaviour: one file shared by several backends (processes), its schema, and unusable paths."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.backends import FlowSpec
from jobkit.backends import sqlite as sqlite_backend
from jobkit.backends._local import to_event
from jobkit.backends.base import Ask, Spend
from jobkit.backends.sqlite import SCHEMA_VERSION, SQLiteBackend
from jobkit.errors import BackendError, ConfigError
from jobkit.models import FlowStatus, Job, JobEvent, JobRef, JobState, Outcome, Progress, RateLimit

Q = "files"
ROOT = Path(__file__).resolve().parent.parent


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def job(job_id: str, **kw: object) -> Job:
    return Job(id=job_id, name="t", queue=Q, data={"n": job_id}, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SQLiteBackend, SQLiteBackend]]:
    """Two backends on one file: what two processes on one machine see."""
    a, b = SQLiteBackend(url_of(tmp_path / "jobs.db")), SQLiteBackend(url_of(tmp_path / "jobs.db"))
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def collect(events: AsyncIterator[JobEvent], n: int, timeout: float = 5.0) -> list[JobEvent]:
    out: list[JobEvent] = []

    async def take() -> None:
        async for ev in events:
            out.append(ev)
            if len(out) == n:
                return

    await asyncio.wait_for(take(), timeout)
    return out


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- several processes on one file -----------------------------------------------------------------
@pytest.mark.asyncio
async def test_job_added_by_one_is_claimed_by_the_other(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    await a.add([job("j1"), job("j2", options={"priority": 1})])
    got = await b.claim(Q, "w-b", limit=5, lease=30, now=time.time())
    assert [j.id for j in got.jobs] == ["j2", "j1"]
    assert all(j.state is JobState.ACTIVE and j.worker == "w-b" for j in got.jobs)
    seen = await a.get(Q, "j1")
    assert seen is not None and seen.state is JobState.ACTIVE and seen.worker == "w-b"
    assert (await a.claim(Q, "w-a", limit=5, lease=30, now=time.time())).jobs == []


@pytest.mark.asyncio
async def test_subscription_sees_events_committed_by_the_other(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    events = await b.subscribe(Q)
    try:
        await a.add([job("j1")])
        (claimed,) = (await a.claim(Q, "w-a", limit=1, lease=30, now=time.time())).jobs
        await a.finish(Q, "w-a", [Outcome(job_id=claimed.id, state=JobState.COMPLETED, result=7)], time.time())
        seen = await collect(events, 3)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert [(e.event, e.job_id) for e in seen] == [("added", "j1"), ("active", "j1"), ("completed", "j1")]
    ids = [int(e.id) for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == 3


@pytest.mark.asyncio
async def test_own_and_foreign_events_interleave_in_order_without_duplicates(
    pair: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = pair
    events = await b.subscribe(Q)
    try:
        for i in range(10):
            await (a if i % 2 else b).add([job(f"j{i}")])
        seen = await collect(events, 10)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert [e.job_id for e in seen] == [f"j{i}" for i in range(10)]
    assert [int(e.id) for e in seen] == sorted({int(e.id) for e in seen})


@pytest.mark.asyncio
async def test_subscribe_is_live_when_it_returns_and_skips_older_events(
    pair: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = pair
    await a.add([job("before")])
    events = await b.subscribe(Q)  # a's event is committed but b has not polled yet: it must not show up
    try:
        await a.add([job("after")])
        (ev,) = await collect(events, 1)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert ev.job_id == "after"


@pytest.mark.asyncio
async def test_since_replays_retained_events_across_backends(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    await a.add([job("j1"), job("j2")])
    await a.cancel(Q, "j1", time.time())
    replay = await b.subscribe(Q, since="0")
    try:
        first = await collect(replay, 3)
    finally:
        await replay.aclose()  # type: ignore[attr-defined]
    assert [(e.event, e.job_id) for e in first] == [("added", "j1"), ("added", "j2"), ("cancelled", "j1")]
    resumed = await b.subscribe(Q, since=first[1].id)
    try:
        await a.add([job("j3")])
        rest = await collect(resumed, 2)
    finally:
        await resumed.aclose()  # type: ignore[attr-defined]
    assert [(e.event, e.job_id) for e in rest] == [("cancelled", "j1"), ("added", "j3")]


@pytest.mark.asyncio
async def test_wait_for_work_wakes_for_a_job_added_by_the_other(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    assert (await b.claim(Q, "w-b", limit=1, lease=30, now=time.time())).jobs == []
    waiting = asyncio.ensure_future(b.wait_for_work(Q, 10))
    await asyncio.sleep(0.05)  # let b settle into its wait: the point is to be woken from it
    started = time.monotonic()
    await a.add([job("j1")])
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 2
    assert [j.id for j in (await b.claim(Q, "w-b", limit=1, lease=30, now=time.time())).jobs] == ["j1"]


@pytest.mark.asyncio
async def test_work_the_other_adds_between_claim_and_wait_is_not_missed(
    pair: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = pair
    await b.wait_for_work(Q, 0.01)  # b now polls for the other's commits
    assert (await b.claim(Q, "w-b", limit=1, lease=30, now=time.time())).jobs == []
    await a.add([job("j1")])
    await asyncio.sleep(0.2)  # b notices while nobody in b is waiting or subscribed
    started = time.monotonic()
    await asyncio.wait_for(b.wait_for_work(Q, 10), 5)
    assert time.monotonic() - started < 1


@pytest.mark.asyncio
async def test_events_nobody_listened_for_are_skipped_not_replayed_late(
    pair: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = pair
    await b.wait_for_work(Q, 0.01)
    await a.add([job(f"old{i}") for i in range(50)])
    await asyncio.sleep(0.1)
    await b.add([job("mine")])  # b's own write lands after a's unread events
    events = await b.subscribe(Q)
    try:
        await a.add([job("new")])
        (ev,) = await collect(events, 1)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert ev.job_id == "new"


@pytest.mark.asyncio
async def test_resume_by_the_other_wakes_a_waiting_worker(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    await a.set_paused(Q, True)
    await a.add([job("j1")])
    assert (await b.claim(Q, "w-b", limit=1, lease=30, now=time.time())).jobs == []
    waiting = asyncio.ensure_future(b.wait_for_work(Q, 10))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await a.set_paused(Q, False)
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 2
    assert (await b.counts(Q)).paused is False


@pytest.mark.asyncio
async def test_work_added_while_a_claim_runs_is_not_missed(tmp_path: Path) -> None:
    async with SQLiteBackend(url_of(tmp_path / "jobs.db")) as b:
        # The claim reaches the connection first and finds nothing; the add commits right after it.
        claimed, _ = await asyncio.gather(b.claim(Q, "w", limit=1, lease=30, now=time.time()), b.add([job("j1")]))
        assert claimed.jobs == []
        started = time.monotonic()
        await asyncio.wait_for(b.wait_for_work(Q, 10), 5)
        assert time.monotonic() - started < 1


def test_one_backend_serves_successive_event_loops(tmp_path: Path) -> None:
    backend = SQLiteBackend(url_of(tmp_path / "jobs.db"))

    async def first() -> None:
        await backend.add([job("j1")])
        await backend.wait_for_work(Q, 0.01)

    async def second() -> list[str]:
        try:
            await backend.wait_for_work(Q, 0.01)
            return [j.id for j in (await backend.claim(Q, "w", limit=5, lease=30, now=time.time())).jobs]
        finally:
            await backend.close()

    asyncio.run(first())
    assert asyncio.run(second()) == ["j1"]


@pytest.mark.asyncio
async def test_concurrent_claims_never_hand_out_a_job_twice(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    await a.add([job(f"j{i}") for i in range(300)])
    taken: dict[str, list[str]] = {"a": [], "b": []}

    async def drain(backend: SQLiteBackend, who: str) -> None:
        while True:
            got = await backend.claim(Q, who, limit=7, lease=30, now=time.time())
            if not got.jobs:
                return
            taken[who].extend(j.id for j in got.jobs)
            outcomes = [Outcome(job_id=j.id, state=JobState.COMPLETED) for j in got.jobs]
            assert len(await backend.finish(Q, who, outcomes, time.time())) == len(got.jobs)

    await asyncio.wait_for(asyncio.gather(drain(a, "a"), drain(b, "b")), 30)
    assert not set(taken["a"]) & set(taken["b"])
    assert sorted(taken["a"] + taken["b"]) == sorted(f"j{i}" for i in range(300))
    assert (await a.counts(Q)).completed == 300


@pytest.mark.asyncio
async def test_rate_limit_window_is_shared_by_every_backend(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    await a.add([job(f"j{i}") for i in range(5)])
    rate = RateLimit(2, per=60)
    now = time.time()
    assert len((await a.claim(Q, "w-a", limit=5, lease=30, now=now, rate_limit=rate)).jobs) == 2
    refused = await b.claim(Q, "w-b", limit=5, lease=30, now=now + 1, rate_limit=rate)
    assert refused.jobs == [] and refused.retry_in == pytest.approx(59)


@pytest.mark.asyncio
async def test_renewed_lease_and_progress_are_visible_to_the_other(pair: tuple[SQLiteBackend, SQLiteBackend]) -> None:
    a, b = pair
    await a.add([job("j1")])
    (claimed,) = (await a.claim(Q, "w-a", limit=1, lease=5, now=time.time())).jobs
    later = time.time() + 100
    assert await a.renew(Q, "w-a", ["j1"], 5, later) == {"j1": False}
    from jobkit.models import Progress

    assert await a.set_progress(Q, "w-a", "j1", Progress(percent=40, message="reading", extra={"rows": 12}))
    seen = await b.get(Q, "j1")
    assert seen is not None and seen.lease_until == later + 5
    assert seen.progress.percent == 40 and seen.progress.extra == {"rows": 12}
    assert seen.created_at == claimed.created_at  # timestamps survive the in-SQL JSON edit exactly
    assert await b.cancel(Q, "j1", time.time()) is not None
    assert await a.renew(Q, "w-a", ["j1"], 5, time.time()) == {"j1": True}


@pytest.mark.asyncio
async def test_a_worker_in_another_process_drains_jobs_this_one_watches(tmp_path: Path) -> None:
    url = url_of(tmp_path / "jobs.db")
    script = textwrap.dedent(f"""
        import asyncio, time
        from jobkit.backends.sqlite import SQLiteBackend
        from jobkit.models import JobState, Outcome

        async def main():
            async with SQLiteBackend({url!r}) as b:
                done, deadline = 0, time.monotonic() + 20
                while done < 20 and time.monotonic() < deadline:
                    got = await b.claim({Q!r}, "other-process", limit=5, lease=30, now=time.time())
                    if not got.jobs:
                        await b.wait_for_work({Q!r}, 0.5)
                        continue
                    outs = [Outcome(job_id=j.id, state=JobState.COMPLETED, result=j.data) for j in got.jobs]
                    done += len(await b.finish({Q!r}, "other-process", outs, time.time()))

        asyncio.run(main())
    """)
    async with SQLiteBackend(url) as here:
        events = await here.subscribe(Q)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT)
        try:
            await here.add([job(f"j{i}") for i in range(20)])
            seen = [e async for e in _until_completed(events, 20)]
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == 0
        assert sorted(e.job_id for e in seen) == sorted(f"j{i}" for i in range(20))
        result = await here.get(Q, "j7")
        assert result is not None and result.state is JobState.COMPLETED and result.result == {"n": "j7"}


async def _until_completed(events: AsyncIterator[JobEvent], n: int) -> AsyncIterator[JobEvent]:
    done = 0
    deadline = time.monotonic() + 20
    while done < n:
        ev = await asyncio.wait_for(events.__anext__(), max(0.1, deadline - time.monotonic()))
        if ev.event == "completed":
            done += 1
            yield ev


# -- the file, its schema, and paths that cannot work ----------------------------------------------
@pytest.mark.asyncio
async def test_schema_version_and_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "jobs.db"
    async with SQLiteBackend(url_of(path)):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "queues", "events", "workers"} <= tables
    conn.close()


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files and folders are world-readable unless made otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.asyncio
async def test_default_database_and_folder_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       umask_022: None) -> None:
    """Payloads and results may be confidential: .jobkit/ is 0700 and the database (and its WAL files) 0600."""
    from jobkit.config import DEFAULT_URL

    monkeypatch.chdir(tmp_path)
    async with SQLiteBackend(DEFAULT_URL) as b:
        await b.add([job("j1")])
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / ".jobkit").iterdir()}
        assert files == {"jobs.db": 0o600, "jobs.db-wal": 0o600, "jobs.db-shm": 0o600}
    assert stat.S_IMODE((tmp_path / ".jobkit").stat().st_mode) == 0o700


@pytest.mark.asyncio
async def test_an_existing_folder_and_database_keep_their_modes(tmp_path: Path, umask_022: None) -> None:
    """A folder or file the user made (say, shared with a group) is left as it is."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    (shared / "jobs.db").touch(mode=0o640)
    async with SQLiteBackend(url_of(shared / "jobs.db")):
        pass
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750
    assert stat.S_IMODE((shared / "jobs.db").stat().st_mode) == 0o640


@pytest.mark.asyncio
async def test_reopening_keeps_jobs_and_event_ids_grow(tmp_path: Path) -> None:
    url = url_of(tmp_path / "jobs.db")
    async with SQLiteBackend(url) as b:
        await b.add([job("j1")])
        replay = await b.subscribe(Q, since="0")
        (first,) = await collect(replay, 1)
        await replay.aclose()  # type: ignore[attr-defined]
    async with SQLiteBackend(url) as b:
        assert (await b.add([job("j1")]))[0].seq == 1  # idempotent across restarts
        events = await b.subscribe(Q)
        await b.add([job("j2")])
        (second,) = await collect(events, 1)
        await events.aclose()  # type: ignore[attr-defined]
    assert int(second.id) > int(first.id)


def _as_schema_9(conn: sqlite3.Connection) -> None:
    """Make a file of this jobkit look as schema 9 wrote it: no metrics table."""
    conn.execute("DROP TABLE metrics")
    conn.execute("PRAGMA user_version = 9")


@pytest.mark.asyncio
async def test_schema_9_database_gains_the_metrics_table(tmp_path: Path) -> None:
    """Schema 10 keeps metrics per minute; a schema 9 file opens, keeps its jobs, and counts the ones that end."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job("j1")])
        now = time.time()
        await b.claim(Q, "w", limit=1, lease=30, now=now)
    with sqlite3.connect(path) as conn:
        _as_schema_9(conn)
    conn.close()
    async with SQLiteBackend(url) as b:
        assert await b.metrics(Q, 0) == []
        await b.finish(Q, "w", [Outcome(job_id="j1", state=JobState.COMPLETED)], now + 1)
        [(minute, name, field, n)] = await b.metrics(Q, 0)
        assert (minute, name, field[0], n) == (int((now + 1) // 60), "t", "c", 1)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
    conn.close()


def _as_schema_8(conn: sqlite3.Connection) -> None:
    """Make a file of this jobkit look as schema 8 wrote it: no webhooks' outbox."""
    _as_schema_9(conn)
    conn.execute("DROP TABLE webhooks")
    conn.execute("DELETE FROM counters WHERE name = 'webhook_id'")
    conn.execute("PRAGMA user_version = 8")


@pytest.mark.asyncio
async def test_schema_8_database_gains_the_webhooks_outbox(tmp_path: Path) -> None:
    """Schema 9 adds the webhooks' outbox; a schema 8 file opens, and a job that completes in it gets its delivery."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job("j1", options=jobkit.JobOptions(webhook="https://hooks.example.com/h"))])
        now = time.time()
        await b.claim(Q, "w", limit=1, lease=30, now=now)
    with sqlite3.connect(path) as conn:
        _as_schema_8(conn)
    conn.close()
    async with SQLiteBackend(url) as b:
        await b.finish(Q, "w", [Outcome(job_id="j1", state=JobState.COMPLETED, result=1)], now)
        [d] = await b.webhook_deliveries(Q)
        assert (d.id, d.job_id, d.state, d.url) == ("1", "j1", "pending", "https://hooks.example.com/h")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
    conn.close()


def _as_schema_7(conn: sqlite3.Connection) -> None:
    """Make a file of this jobkit look as schema 7 wrote it: no owners and tags."""
    _as_schema_8(conn)
    conn.execute("DROP TABLE job_tags")
    conn.execute("DROP INDEX jobs_owner")
    conn.execute("ALTER TABLE jobs DROP COLUMN owner")
    conn.execute("PRAGMA user_version = 7")


def _as_schema_6(conn: sqlite3.Connection) -> None:
    """Make a file of this jobkit look as schema 6 wrote it: no global concurrency column."""
    _as_schema_7(conn)
    conn.execute("ALTER TABLE queues DROP COLUMN concurrency")
    conn.execute("PRAGMA user_version = 6")


@pytest.mark.asyncio
async def test_schema_6_database_gains_global_concurrency(tmp_path: Path) -> None:
    """Schema 7 stores a queue's global concurrency; a schema 6 file opens with none, and can hold one."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job(f"j{i}") for i in range(3)])
        await b.claim(Q, "w", limit=1, lease=30, now=time.time())
    with sqlite3.connect(path) as conn:
        _as_schema_6(conn)
    conn.close()
    async with SQLiteBackend(url) as b:
        assert await b.global_concurrency(Q) is None
        await b.set_global_concurrency(Q, 2)
        assert len((await b.claim(Q, "w", limit=5, lease=30, now=time.time())).jobs) == 1  # one was active
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert conn.execute("SELECT concurrency FROM queues WHERE name = ?", (Q,)).fetchone()[0] == 2
    conn.close()


def _as_schema_5(conn: sqlite3.Connection) -> None:
    """Make a file of this jobkit look as schema 5 wrote it: no flows (no ledger, no held column)."""
    _as_schema_6(conn)
    conn.execute("DROP TABLE flow_links")
    conn.execute("DROP INDEX jobs_done")
    conn.execute("DROP INDEX jobs_expiry")
    conn.execute("ALTER TABLE jobs DROP COLUMN held")
    conn.execute("CREATE INDEX jobs_done ON jobs (queue, state, finished_at, seq) WHERE finished_at IS NOT NULL")
    conn.execute("CREATE INDEX jobs_expiry ON jobs (queue, state, expires_at) WHERE expires_at IS NOT NULL")
    conn.execute("PRAGMA user_version = 5")


def _as_schema_3(conn: sqlite3.Connection) -> None:
    """Make a file of this jobkit look as schema 3 wrote it: the worker holding a job was its `owner`."""
    _as_schema_5(conn)
    conn.execute("ALTER TABLE jobs RENAME COLUMN worker TO owner")
    conn.execute("UPDATE jobs SET body = json_set(json_remove(body, '$.worker'), '$.owner', json_extract(body,"
                 " '$.worker'))")
    conn.execute("UPDATE jobs SET body = replace(body, '\"worker\":', '\"owner\":')")  # history entries too
    conn.execute("PRAGMA user_version = 3")


@pytest.mark.asyncio
async def test_schema_3_database_names_the_lease_holder_worker(tmp_path: Path) -> None:
    """Schema 4 calls the worker holding a lease `worker` (`owner` is for the user a job belongs to): a job active
    when the file was upgraded is still held by its worker, and its history keeps who ran it."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job("j1"), job("j2")])
        now = time.time()
        await b.claim(Q, "w1", limit=2, lease=30, now=now)
    with sqlite3.connect(path) as conn:
        _as_schema_3(conn)
        assert '"owner":"w1"' in conn.execute("SELECT body FROM jobs WHERE id = 'j1'").fetchone()[0]
    conn.close()
    async with SQLiteBackend(url) as b:
        held = await b.get(Q, "j1")
        assert held is not None and held.worker == "w1" and held.history[-1].worker == "w1"
        assert [j.id for j in await b.list(Q, worker="w1")] == ["j2", "j1"]
        assert await b.renew(Q, "w1", ["j1"], 30, now + 1) == {"j1": False}
        [done] = await b.finish(Q, "w1", [Outcome(job_id="j1", state=JobState.COMPLETED)], now + 1)
        assert done.state is JobState.COMPLETED and done.worker is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert conn.execute("SELECT worker FROM jobs WHERE id = 'j2'").fetchone()[0] == "w1"
        assert '"owner"' not in conn.execute("SELECT body FROM jobs WHERE id = 'j2'").fetchone()[0].split("history")[0]
    conn.close()


@pytest.mark.asyncio
async def test_schema_1_database_is_upgraded_with_its_completed_counts(tmp_path: Path) -> None:
    """Schema 2 counts each queue's completed jobs (retention as jobs finish); a schema 1 file gets its counts."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job(f"j{i}") for i in range(4)])
        now = time.time()
        for i in range(3):
            [claimed] = (await b.claim(Q, "w", limit=1, lease=30, now=now + i)).jobs
            await b.finish(Q, "w", [Outcome(job_id=claimed.id, state=JobState.COMPLETED)], now + i)
    with sqlite3.connect(path) as conn:  # as schema 1 left it: no counter column
        _as_schema_3(conn)
        conn.execute("ALTER TABLE queues DROP COLUMN completed")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    async with SQLiteBackend(url) as b:
        [last] = (await b.claim(Q, "w", limit=1, lease=30, now=now + 3)).jobs
        await b.finish(Q, "w", [Outcome(job_id=last.id, state=JobState.COMPLETED)], now + 3, keep_completed=2)
        kept = await b.list(Q, states=[JobState.COMPLETED])
        assert sorted(j.id for j in kept) == ["j2", "j3"], "the upgraded counter saw the 3 completed before"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert conn.execute("SELECT completed FROM queues WHERE name = ?", (Q,)).fetchone()[0] == 2
    conn.close()


@pytest.mark.asyncio
async def test_schema_2_database_gains_the_records_table_and_keeps_its_jobs(tmp_path: Path) -> None:
    """Schema 3 adds the records table (schedules); a schema 2 file opens, keeps its jobs and can hold records."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job("j1")])
    with sqlite3.connect(path) as conn:  # as schema 2 left it: no records table
        _as_schema_3(conn)
        conn.execute("DROP TABLE records")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    async with SQLiteBackend(url) as b:
        assert await b.get(Q, "j1") is not None
        assert await b.write_record(Q, "schedule", "nightly", "{}", version=0) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
    conn.close()


@pytest.mark.asyncio
async def test_schema_4_database_gains_the_quota_tables(tmp_path: Path) -> None:
    """Schema 5 adds the grants and budgets tables (shared quotas); a schema 4 file opens and can hold them."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job("j1")])
    with sqlite3.connect(path) as conn:  # as schema 4 left it
        _as_schema_5(conn)
        conn.execute("DROP TABLE grants")
        conn.execute("DROP TABLE budgets")
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    async with SQLiteBackend(url) as b:
        assert await b.get(Q, "j1") is not None
        assert await b.take(Q, [Ask("rpm", 1, 1, 60)], time.time()) == 0.0
        assert await b.reserve(Q, "cost", 1.5, 2.0) == (True, Spend(0.0, 1.5))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
    conn.close()


@pytest.mark.asyncio
async def test_schema_5_database_gains_flows_and_keeps_its_retention(tmp_path: Path) -> None:
    """Schema 6 adds flows: a parent's ledger, and the jobs it holds back from retention. A schema 5 file keeps its
    jobs (none held), its completed count, and retention by count; then a flow runs in it."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job(f"j{i}") for i in range(3)])
        now = time.time()
        for i in range(2):
            [claimed] = (await b.claim(Q, "w", limit=1, lease=30, now=now + i)).jobs
            await b.finish(Q, "w", [Outcome(job_id=claimed.id, state=JobState.COMPLETED)], now + i)
    with sqlite3.connect(path) as conn:
        _as_schema_5(conn)
    conn.close()
    async with SQLiteBackend(url) as b:
        [last] = (await b.claim(Q, "w", limit=1, lease=30, now=now + 3)).jobs
        await b.finish(Q, "w", [Outcome(job_id=last.id, state=JobState.COMPLETED)], now + 3, keep_completed=2)
        assert sorted(j.id for j in await b.list(Q, states=[JobState.COMPLETED])) == ["j1", "j2"]
        parent = job("p").model_copy(update={"flow": FlowStatus(total=1)})
        child = job("c").model_copy(update={"parent": JobRef(queue=Q, id="p")})
        await b.add_flow([FlowSpec(parent, ((JobRef(queue=Q, id="c"), True),)), FlowSpec(child)])
        [claimed] = (await b.claim(Q, "w", limit=1, lease=30, now=now + 4)).jobs
        assert claimed.id == "c"
        await b.finish(Q, "w", [Outcome(job_id="c", state=JobState.COMPLETED)], now + 4, keep_completed=0)
        assert await b.get(Q, "c") is not None, "held back from retention while its parent has not run"
        ready = await b.get(Q, "p")
        assert ready is not None and ready.state is JobState.WAITING and ready.flow is not None
        assert ready.flow.completed == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert conn.execute("SELECT held FROM jobs WHERE id = 'c'").fetchone()[0] == 1
        assert conn.execute("SELECT SUM(held) FROM jobs WHERE id != 'c'").fetchone()[0] == 0
    conn.close()


@pytest.mark.asyncio
async def test_schema_7_database_gains_owners_and_tags(tmp_path: Path) -> None:
    """Schema 8 adds owners (a column) and tags (a table), indexed: a schema 7 file keeps its jobs (no owner, no
    tags), and then holds owned and tagged jobs, listed and removed as on any file."""
    url, path = url_of(tmp_path / "jobs.db"), tmp_path / "jobs.db"
    async with SQLiteBackend(url) as b:
        await b.add([job("old")])
    with sqlite3.connect(path) as conn:
        _as_schema_7(conn)
    conn.close()
    async with SQLiteBackend(url) as b:
        old = await b.get(Q, "old")
        assert old is not None and old.owner is None and old.tags == {}
        await b.add([job("new").model_copy(update={"owner": "u-1", "tags": {"doc": "d-1"}})])
        assert [j.id for j in await b.list(Q, owner="u-1")] == ["new"]
        assert [j.id for j in await b.list(Q, tag=("doc", "d-1"))] == ["new"]
        assert [j.id for j in await b.list(Q)] == ["new", "old"]
        now = time.time()
        for claimed in (await b.claim(Q, "w", limit=2, lease=30, now=now)).jobs:
            await b.finish(Q, "w", [Outcome(job_id=claimed.id, state=JobState.COMPLETED)], now)
        assert await b.clean(Q, JobState.COMPLETED, finished_before=now + 1) == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert conn.execute("SELECT COUNT(*) FROM job_tags").fetchone()[0] == 0, "tags go with their job"
    conn.close()


@pytest.mark.asyncio
async def test_database_from_a_newer_jobkit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer jobkit"):
        await SQLiteBackend(url_of(path)).open()


@pytest.mark.asyncio
async def test_directory_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    backend = SQLiteBackend(url_of(blocker / "sub" / "jobs.db"))
    with pytest.raises(ConfigError, match="cannot create the directory") as info:
        await backend.open()
    assert str(blocker) in str(info.value) and "JOBKIT_URL" in str(info.value)


@pytest.mark.asyncio
async def test_path_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the SQLite database") as info:
        await SQLiteBackend(url_of(tmp_path)).open()
    assert str(tmp_path) in str(info.value)


@pytest.mark.asyncio
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
async def test_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError) as info:
            await SQLiteBackend(url_of(locked / "jobs.db")).open()
        assert str(locked) in str(info.value) and "writable" in str(info.value)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "postgres:///x.db"])
def test_unusable_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="sqlite:///"):
        SQLiteBackend(url)


def test_relative_and_absolute_urls(tmp_path: Path) -> None:
    assert SQLiteBackend("sqlite:///rel/jobs.db").path == os.path.abspath("rel/jobs.db")
    assert SQLiteBackend(f"sqlite:///{tmp_path}/jobs.db").path == f"{tmp_path}/jobs.db"
    assert not os.path.exists("rel")  # the constructor does no I/O


@pytest.mark.asyncio
async def test_events_table_is_trimmed_per_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "EVENTS_KEPT", 5)
    monkeypatch.setattr(sqlite_backend, "TRIM_EVERY", 10)
    path = tmp_path / "jobs.db"
    async with SQLiteBackend(url_of(path)) as b:
        for i in range(12):
            await b.add([job(f"j{i}")])
        replay = await b.subscribe(Q, since="0")
        kept = await collect(replay, 5)
        await replay.aclose()  # type: ignore[attr-defined]
    assert [e.job_id for e in kept] == [f"j{i}" for i in range(5, 10)]  # trimmed at the 10th event
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 7
    conn.close()


@pytest.mark.asyncio
async def test_close_ends_subscriptions_and_reopen_works(tmp_path: Path) -> None:
    b = SQLiteBackend(url_of(tmp_path / "jobs.db"))
    events = await b.subscribe(Q)  # opens lazily
    ending = asyncio.ensure_future(collect(events, 1))
    await asyncio.sleep(0)
    await b.close()
    assert await asyncio.wait_for(ending, 5) == []  # the subscription ended, without an event
    await b.close()  # idempotent
    await b.open()
    try:
        assert [j.id for j in await b.add([job("j1")])] == ["j1"]
    finally:
        await b.close()


def test_interpreter_exits_even_if_the_backend_is_never_closed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio
        from jobkit.backends.sqlite import SQLiteBackend
        backend = SQLiteBackend({url_of(tmp_path / "jobs.db")!r})

        async def main():
            await backend.open()
            await backend.wait_for_work("q", 0.05)

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=ROOT, timeout=30, check=False)
    assert done.returncode == 0


# -- one process: group commit, and the body parsed once per attempt -------------------------------------
@pytest.mark.asyncio
async def test_writes_of_one_loop_turn_share_a_transaction_yet_fail_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SQLiteBackend(url_of(tmp_path / "jobs.db")) as b:
        events = await b.subscribe(Q)
        commits: list[int] = []
        store = b._store
        assert store is not None
        run = store.transaction

        def counted(calls: Sequence[Any]) -> Any:
            commits.append(len(calls))
            return run(calls)

        monkeypatch.setattr(store, "transaction", counted)
        unstorable = Job(id="bad", name="t", queue=Q, data=object())  # fails inside the transaction
        got = await asyncio.gather(b.add([job("a")]), b.add([unstorable]), b.add([job("c")]), return_exceptions=True)
        assert commits == [3]
        assert [j.id for j in got[0]] == ["a"] and [j.id for j in got[2]] == ["c"]  # type: ignore[union-attr]
        assert isinstance(got[1], Exception)
        assert await b.get(Q, "bad") is None and (await b.counts(Q)).waiting == 2
        seen = await collect(events, 2)
        assert [(e.job_id, e.event) for e in seen] == [("a", "added"), ("c", "added")]
        assert int(seen[1].id) == int(seen[0].id) + 1  # the failed call left no event and no gap
        await events.aclose()  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_writes_asked_for_while_a_transaction_runs_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer adding one job at a time and a worker claiming: each waits for the transaction under way,
    then all of them go in one, instead of one transaction (and commit) each."""
    async with SQLiteBackend(url_of(tmp_path / "jobs.db")) as b:
        commits: list[list[str]] = []
        store = b._store
        assert store is not None
        run, entered, release = store.transaction, threading.Event(), threading.Event()

        def held(calls: Sequence[Any]) -> Any:  # on the connection's thread
            commits.append([fn.__name__ for fn, _, _ in calls])
            if len(commits) == 1:
                entered.set()
                assert release.wait(10)
            return run(calls)

        monkeypatch.setattr(store, "transaction", held)
        first = asyncio.ensure_future(b.add([job("a")]))
        assert await asyncio.to_thread(entered.wait, 10)  # the first transaction is under way, and held there
        later = []
        for name in ("b", "c", "d"):  # each in a turn of its own, as an awaiting producer's adds come
            later.append(asyncio.ensure_future(b.add([job(name)])))
            await asyncio.sleep(0)
        later.append(asyncio.ensure_future(b.claim(Q, "w", limit=2, lease=30, now=time.time())))
        await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), 10)
        assert commits == [["add"], ["add", "add", "add", "claim"]]
        assert [j.id for j in later[-1].result().jobs] == ["a", "b"]  # the claim saw the adds before it
        assert (await b.counts(Q)).waiting == 2


@pytest.mark.asyncio
async def test_a_queue_row_made_by_a_rolled_back_add_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An add remembers the queues whose row exists, to skip inserting it again; a row made in a transaction
    that then rolled back is not remembered, so the next add makes it and the queue is listed."""
    async with SQLiteBackend(url_of(tmp_path / "jobs.db")) as b:
        store = b._store
        assert store is not None
        write_events = store._write_events

        def fails_once(tx: Any) -> int:  # after the add's inserts, before COMMIT: the whole transaction rolls back
            monkeypatch.setattr(store, "_write_events", write_events)
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(store, "_write_events", fails_once)
        with pytest.raises(BackendError, match="disk I/O error"):
            await b.add([job("a")])
        assert await b.queues() == [] and await b.get(Q, "a") is None
        await b.add([job("a")])
        assert await b.queues() == [Q]
        assert (await b.counts(Q)).waiting == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("returning", [True, False], ids=["UPDATE-RETURNING", "UPDATE-then-SELECT"])
async def test_counters_reserve_the_same_numbers_with_or_without_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """Job seq and event ids come from counters: one statement where SQLite has RETURNING (3.35+), two on older."""
    monkeypatch.setattr(sqlite_backend, "_RETURNING", returning)
    async with SQLiteBackend(url_of(tmp_path / "jobs.db")) as b:
        events = await b.subscribe(Q, since="0")
        first = await b.add([job("a"), job("b")])
        second = await b.add([job("c")])
        assert [j.seq for j in first + second] == [1, 2, 3]
        seen = await collect(events, 3)
        assert [(e.job_id, int(e.id)) for e in seen] == [("a", 1), ("b", 2), ("c", 3)]
        await events.aclose()  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_completed_events_carry_small_results_so_a_waiter_reads_no_job(tmp_path: Path) -> None:
    """As on Redis: a "completed" event published in this process carries a result of up to 1 KiB of JSON (a copy,
    not the worker's object), so `JobHandle.result()` needs no read of the job; a larger one is read as before."""
    async with SQLiteBackend(url_of(tmp_path / "jobs.db")) as b:
        events = await b.subscribe(Q)
        await b.add([job("small"), job("large")])
        claimed = (await b.claim(Q, "w", limit=2, lease=30, now=time.time())).jobs
        assert [j.id for j in claimed] == ["small", "large"]
        small, large = {"rows": [1, 2], "ok": True}, {"text": "x" * 2000}
        await b.finish(Q, "w", [Outcome(job_id="small", state=JobState.COMPLETED, result=small),
                                Outcome(job_id="large", state=JobState.COMPLETED, result=large)], time.time())
        seen = [e for e in await collect(events, 6) if e.event == "completed"]
        await events.aclose()  # type: ignore[attr-defined]
        assert [e.job_id for e in seen] == ["small", "large"]
        assert seen[0].carried_result == (small,) and seen[0].carried_result[0] is not small
        assert seen[1].carried_result is None


@pytest.mark.asyncio
async def test_finish_keeps_what_changed_since_the_claim_and_not_the_workers_edits(tmp_path: Path) -> None:
    async with SQLiteBackend(url_of(tmp_path / "jobs.db")) as b:
        await b.add([job("a"), Job(id="s", name="t", queue=Q, data=5), Job(id="h", name="t", queue=Q)])
        claimed = {j.id: j for j in (await b.claim(Q, "w", limit=3, lease=30, now=time.time())).jobs}
        assert b._store is not None and set(b._store.claimed) == {(Q, "s"), (Q, "h")}  # "a" has a dict payload
        claimed["a"].data["n"] = "changed by the task"  # what the task edits in place stays its own
        claimed["h"].progress.percent = 99
        assert await b.set_progress(Q, "w", "s", Progress(percent=40, message="p"))
        await b.renew(Q, "w", ["s"], 60, time.time())
        outcomes = [Outcome(job_id=i, state=JobState.COMPLETED, result=i) for i in ("a", "s", "h")]
        assert len(await b.finish(Q, "w", outcomes, time.time())) == 3
        assert not b._store.claimed
        a, s, h = await b.get(Q, "a"), await b.get(Q, "s"), await b.get(Q, "h")
    assert a is not None and a.data == {"n": "a"} and a.result == "a" and a.state is JobState.COMPLETED
    assert s is not None and s.progress.percent == 40 and s.result == "s" and s.state is JobState.COMPLETED
    for done in (s, h):
        assert done is not None and done.worker is None and done.lease_until is None and done.attempts == 1
        assert [e.state for e in done.history] == [JobState.WAITING, JobState.ACTIVE, JobState.COMPLETED]
    assert h is not None and h.result == "h" and h.finished_at is not None and h.progress.percent == 0


def test_event_json_is_the_models_json() -> None:
    for progress, owner in ((None, None), (Progress(percent=5, message="m", extra={"a": [1, 2.5]}), "u-1")):
        row = (42, Q, "j", "t", "progress", "active", time.time(), 3, progress, None, owner)
        ev = to_event(row)
        assert set(ev.__dict__) == set(JobEvent.model_fields) and ev == JobEvent.model_validate(ev.__dict__)
        assert sqlite_backend._event_json(row) == ev.model_dump_json()


@jobkit.task(name="sq.echo", queue=Q)
async def echo(ctx: jobkit.Context, n: int) -> int:
    return n


async def test_a_stored_job_that_cannot_be_read_fails_alone(tmp_path: Path) -> None:
    """A record no longer readable as a Job (a NaN written by an older jobkit, a hand edit) fails when claimed,
    alone: the worker lives on and runs the rest; the failed job reads again, its record kept in the traceback."""
    path = tmp_path / "jobs.db"
    backend = SQLiteBackend(url_of(path))
    q = jobkit.Queue(Q, backend=backend)
    bad_options, not_json, good = await q.add(echo, 1), await q.add(echo, 2), await q.add(echo, 3)
    raw = sqlite3.connect(path)
    try:
        with raw:
            raw.execute("UPDATE jobs SET body = json_set(body, '$.options.backoff.delay', json('null')) WHERE id = ?",
                        (bad_options.id,))
            raw.execute("""UPDATE jobs SET body = '{"id": "cut short' WHERE id = ?""", (not_json.id,))
    finally:
        raw.close()
    async with jobkit.Worker([echo], backend=backend, queues=[Q], handle_signals=False) as worker:
        assert await jobkit.JobHandle(good, backend, echo).result(timeout=10) == 3
        assert not worker.stopping
    for planted, why, stored in ((bad_options, "options.backoff.delay", '"delay":null'),
                                 (not_json, "Invalid JSON", '{"id": "cut short')):
        done = await backend.get(Q, planted.id)
        assert done is not None and done.state is JobState.FAILED and done.attempts == 1
        assert done.error is not None and "could not be read" in done.error and why in done.error
        assert done.traceback is not None and stored in done.traceback  # the record as it was stored
        assert done.finished_at is not None and done.history[-1].state is JobState.FAILED
    assert (await backend.get(Q, bad_options.id)).data == 1  # type: ignore[union-attr]
    assert {j.state for j in await q.jobs()} == {JobState.FAILED, JobState.COMPLETED}
    assert (await q.counts()).failed == 2
    await backend.close()
