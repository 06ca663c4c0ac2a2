"""SQLite refusing writes: a full disk (a small tmpfs) and a damaged file. Producers get a BackendError that says
what to do; a worker logs, backs off and carries on; nothing committed before is lost."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.backends.sqlite import SQLiteBackend
from jobkit.models import JobState

QUEUE = "faults"


@jobkit.task(name="faults.echo", queue=QUEUE)
async def echo(ctx: jobkit.Context, n: int) -> int:
    return n


class Logged(logging.Handler):
    """Sets an event once `count` records whose message contains `text` were logged."""

    def __init__(self, text: str, count: int = 1) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.count, self.seen, self.event = text, count, [], asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.text in message:
            self.seen.append(message)
            if len(self.seen) >= self.count:
                self.event.set()


@pytest.fixture
def logged() -> Iterator[Callable[..., Logged]]:
    handlers: list[Logged] = []
    jobkit_log = logging.getLogger("jobkit")

    def watch(text: str, count: int = 1) -> Logged:
        handler = Logged(text, count)
        jobkit_log.addHandler(handler)
        handlers.append(handler)
        return handler

    level = jobkit_log.level
    jobkit_log.setLevel(logging.DEBUG)  # a worker logs its first failure as a warning, the next ones as debug
    try:
        yield watch
    finally:
        jobkit_log.setLevel(level)
        for handler in handlers:
            jobkit_log.removeHandler(handler)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True,
                       capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        pytest.skip(f"cannot mount a tmpfs here ({detail}): the disk-full test needs root and mount(8)")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(path: Path) -> None:
    """Write zeros to `path` until the disk is full."""
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


async def test_disk_full_is_a_backend_error_and_the_worker_carries_on(
    small_disk: Path, logged: Callable[..., Logged], watch: Callable[..., Any]
) -> None:
    backend = SQLiteBackend(f"sqlite:///{small_disk / 'jobs.db'}")
    q = jobkit.Queue(QUEUE, backend=backend)
    committed = [j.id for j in await q.add_bulk(echo, list(range(50)))]
    filler = small_disk / "filler"
    fill(filler)
    with pytest.raises(jobkit.BackendError) as refused:
        for n in range(10_000):  # the WAL may hold a few more writes before it must grow
            committed.append((await q.add(echo, n)).id)
    message = str(refused.value)
    assert "is full" in message and "free space" in message and str(small_disk) in message
    assert isinstance(refused.value.__cause__, sqlite3.Error)
    assert (await q.counts()).waiting == len(committed), "reads still work, and every committed job is there"

    claims_failed = logged("could not claim", count=2)
    worker = jobkit.Worker([echo], backend=backend, queues=[QUEUE], handle_signals=False)
    async with watch(backend, QUEUE) as w:
        running = asyncio.ensure_future(worker.run())
        try:
            await asyncio.wait_for(claims_failed.event.wait(), 30)
            assert "is full" in claims_failed.seen[0] and not running.done()
            assert (await q.counts()).completed == 0
            filler.unlink()  # space is back: the worker goes on by itself
            await w.until(lambda e: e.event == "completed", timeout=30, count=len(committed))
        finally:
            worker.stop()
            await asyncio.wait_for(running, 30)
    done = await q.jobs(limit=len(committed) + 10)
    assert sorted(j.id for j in done) == sorted(committed)
    assert all(j.state is JobState.COMPLETED for j in done)
    await backend.close()


def damage(path: Path, table: str) -> None:
    """Overwrite the first pages of `table`'s b-tree with garbage (the schema page stays intact)."""
    raw = sqlite3.connect(path)
    try:
        (root,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        (page_size,) = raw.execute("PRAGMA page_size").fetchone()
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size * 4)


async def test_damaged_file_is_a_backend_error_and_the_worker_stays_up(
    tmp_path: Path, logged: Callable[..., Logged]
) -> None:
    path = tmp_path / "jobs.db"
    backend = SQLiteBackend(f"sqlite:///{path}")
    q = jobkit.Queue(QUEUE, backend=backend)
    await q.add_bulk(echo, list(range(200)))
    await backend.close()
    damage(path, "jobs")

    backend = SQLiteBackend(f"sqlite:///{path}")
    q = jobkit.Queue(QUEUE, backend=backend)
    for call in (lambda: q.add(echo, 1), lambda: q.get("job-1"), lambda: q.jobs(limit=5)):
        with pytest.raises(jobkit.BackendError, match="is damaged.*restore it from a backup.*recover") as refused:
            await call()
        assert isinstance(refused.value.__cause__, sqlite3.DatabaseError)

    claims_failed = logged("could not claim", count=3)
    worker = jobkit.Worker([echo], backend=backend, queues=[QUEUE], handle_signals=False)
    running = asyncio.ensure_future(worker.run())
    try:
        await asyncio.wait_for(claims_failed.event.wait(), 30)
        assert all("is damaged" in m for m in claims_failed.seen)
        assert not running.done() and not worker.stopping, "the worker is still up, backing off"
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
    await backend.close()


async def test_a_file_damaged_from_its_first_page_cannot_be_opened(tmp_path: Path) -> None:
    """Opening is where an unusable URL is reported, as a ConfigError; it says the file is damaged and what to do."""
    path = tmp_path / "jobs.db"
    backend = SQLiteBackend(f"sqlite:///{path}")
    await jobkit.Queue(QUEUE, backend=backend).add(echo, 1)
    await backend.close()
    with path.open("r+b") as f:
        f.write(b"\xa5" * 4096)
    with pytest.raises(jobkit.ConfigError, match="is damaged.*restore it from a backup"):
        await SQLiteBackend(f"sqlite:///{path}").open()
