"""The local spool: jobs submitted with `degrade="spool"` while their Redis did not answer, kept in a SQLite file
(`.jobkit/spool.db`, mode 0600) until they are forwarded.

Forwarding adds a spooled job to its backend under the id it was given at submit time, then removes it from the
spool. Adding is idempotent on the job id, so a forward cut short (a crash between the add and the removal, two
processes forwarding at once) never makes a second job. A forwarder task runs in the submitting process while its
event loop does; `jobkit spool flush` forwards whatever is left. The spool keeps no credentials: its rows name
their backend by the URL with the password masked, and are forwarded to the URL the forwarding process is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

from .backends import Backend
from .config import BackendLike, get_backend, resolve_url
from .errors import BackendUnavailable
from .models import Job
from .urls import mask_url

__all__ = ["DEFAULT_PATH", "ENV", "ensure_forwarder", "flush_spool", "forward", "forwarder", "put", "size",
           "spool_path", "spool_size", "stop_forwarders", "targets"]

ENV = "JOBKIT_SPOOL"
DEFAULT_PATH = ".jobkit/spool.db"
BATCH = 500  # jobs forwarded per round trip
RETRY_FIRST, RETRY_MAX = 0.5, 5.0  # seconds between the forwarder's tries while the backend is down

log = logging.getLogger("jobkit")
_SCHEMA = """CREATE TABLE IF NOT EXISTS spooled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, queue TEXT NOT NULL, job_id TEXT NOT NULL,
    job TEXT NOT NULL, spooled_at REAL NOT NULL, UNIQUE (target, queue, job_id))"""


def spool_path() -> Path:
    """The spool file: $JOBKIT_SPOOL, else .jobkit/spool.db in the current directory."""
    return Path(os.environ.get(ENV) or DEFAULT_PATH)


@contextlib.contextmanager
def _open(create: bool) -> Iterator[sqlite3.Connection | None]:
    path = spool_path()
    if not path.exists():
        if not create:
            yield None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # owner only: payloads may be private
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute(_SCHEMA)
        yield conn
    finally:
        conn.close()


def target_of(backend: Backend) -> str:
    """How spool rows name their backend: its URL without the password."""
    return mask_url(backend.url)


def put(backend: Backend, jobs: Sequence[Job]) -> None:
    """Keep `jobs` for `backend` (a job id spooled again is kept once)."""
    rows = [(target_of(backend), j.queue, j.id, j.model_dump_json(), time.time()) for j in jobs]
    with _open(create=True) as conn:
        assert conn is not None
        conn.executemany("INSERT OR IGNORE INTO spooled (target, queue, job_id, job, spooled_at)"
                         " VALUES (?, ?, ?, ?, ?)", rows)


def size(backend: Backend | None = None) -> int:
    """Jobs in the spool (for `backend` only, if given); 0 when there is no spool file. Never creates one."""
    with _open(create=False) as conn:
        if conn is None:
            return 0
        if backend is None:
            return int(conn.execute("SELECT COUNT(*) FROM spooled").fetchone()[0])
        return int(conn.execute("SELECT COUNT(*) FROM spooled WHERE target = ?", (target_of(backend),)).fetchone()[0])


def targets() -> dict[str, int]:
    """Spooled jobs by the (masked) URL of the backend they wait for."""
    with _open(create=False) as conn:
        if conn is None:
            return {}
        return dict(conn.execute("SELECT target, COUNT(*) FROM spooled GROUP BY target ORDER BY target").fetchall())


def spool_size() -> int:
    """Jobs waiting in this directory's spool for their Redis to answer (0: none). A health check reports
    "degraded" while it is above zero."""
    return size()


async def flush_spool(backend: BackendLike = None) -> int:
    """Forward the jobs spooled for `backend` (default: JOBKIT_URL, then REDIS_URL) now; returns how many.

    BackendUnavailable if it still does not answer (the jobs stay spooled)."""
    b = backend if isinstance(backend, Backend) else await get_backend(resolve_url(backend)[0])
    return await forward(b)


def _take(target: str) -> list[tuple[int, Job]]:
    with _open(create=False) as conn:
        if conn is None:
            return []
        rows = conn.execute("SELECT seq, job FROM spooled WHERE target = ? ORDER BY seq LIMIT ?", (target, BATCH))
        return [(seq, Job.model_validate(json.loads(text))) for seq, text in rows]


def _remove(seqs: Sequence[int]) -> None:
    with _open(create=False) as conn:
        if conn is not None:
            conn.executemany("DELETE FROM spooled WHERE seq = ?", [(s,) for s in seqs])


async def forward(backend: Backend) -> int:
    """Add every job spooled for `backend` to it, oldest first, and remove each from the spool; returns how many.

    BackendUnavailable (a ConfigError) if it does not answer; what was forwarded before that stays forwarded."""
    await backend.open()
    target, done = target_of(backend), 0
    while rows := await asyncio.to_thread(_take, target):
        await backend.add([job for _, job in rows])
        await asyncio.to_thread(_remove, [seq for seq, _ in rows])
        done += len(rows)
    return done


_forwarders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task[int]]] = (
    weakref.WeakKeyDictionary())


def forwarder(backend: Backend) -> asyncio.Task[int] | None:
    """This loop's forwarder for `backend`, while it runs (its result: the jobs it forwarded)."""
    task = _forwarders.get(asyncio.get_running_loop(), {}).get(target_of(backend))
    return None if task is None or task.done() else task


def ensure_forwarder(backend: Backend) -> asyncio.Task[int]:
    """Start (once per loop and backend) a task that forwards `backend`'s spooled jobs as soon as it answers."""
    running = forwarder(backend)
    if running is not None:
        return running
    task = asyncio.get_running_loop().create_task(_forward_when_back(backend))
    _forwarders.setdefault(asyncio.get_running_loop(), {})[target_of(backend)] = task
    return task


async def _forward_when_back(backend: Backend) -> int:
    wait, total = RETRY_FIRST, 0
    while await asyncio.to_thread(size, backend):
        try:
            total += await forward(backend)
        except BackendUnavailable:
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX)
        except Exception:  # keep the jobs spooled, say why, and leave them to `jobkit spool flush`
            log.exception("forwarding spooled jobs to %s failed; they stay in %s (`jobkit spool flush` retries)",
                          target_of(backend), spool_path())
            break
    if total:
        log.info("forwarded %d spooled job(s) to %s", total, target_of(backend))
    return total


async def stop_forwarders() -> None:
    """Stop this loop's forwarders (the loop is ending): the jobs they had not forwarded stay spooled."""
    tasks = list(_forwarders.pop(asyncio.get_running_loop(), {}).values())
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
