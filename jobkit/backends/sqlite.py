"""`sqlite:///path`: jobs in one SQLite file (WAL mode), shared safely by the processes of one machine."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import unquote

import aiosqlite
from pydantic import ValidationError
from pydantic_core import to_json

from .. import limiter
from ..deliveries import DELIVERIES_KEPT, DeliveryAttempt, DeliveryState, WebhookDelivery
from ..errors import BackendError, ConfigError
from ..models import (
    TERMINAL_STATES,
    Job,
    JobEvent,
    JobRef,
    JobState,
    Outcome,
    Progress,
    QueueCounts,
    RateLimit,
    WorkerInfo,
    dump_json,
    trusted,
)
from ..urls import mask_url
from . import _flows as flows
from . import _metrics
from . import _outbox as outbox
from . import _transitions as transitions
from ._local import Event, EventHub, Row, Subscription, event_id
from ._windows import over_by, wait_until_fits
from .base import (
    CONCURRENCY_RECHECK,
    Ask,
    Backend,
    ChildLink,
    ClaimResult,
    FlowSpec,
    Offer,
    Record,
    Spend,
    check_asks,
    check_record_add,
)

__all__ = ["SQLiteBackend"]

log = logging.getLogger("jobkit")

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION = 10  # PRAGMA user_version; bump it and add a migration step when the schema changes
BUSY_TIMEOUT = 10.0  # seconds a transaction waits for another process's write lock
POLL_EVERY = 0.02  # seconds between checks for commits made by other processes
EVENTS_KEPT = 10_000  # newest events kept per queue, for `subscribe(since=...)`
TRIM_EVERY = 1_000  # events written between two trims of the events table
CHUNK = 500  # ids per `IN (...)` list
KEEP_ALL = 1 << 62  # no limit on what one retention step removes
CLAIMED_KEPT = 10_000  # claimed jobs remembered for their finish (see _Store.claimed)
RESULT_IN_EVENT = 1024  # bytes of result JSON a "completed" event carries to this process's waiters (as on Redis)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        queue TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, name TEXT NOT NULL,
        priority INTEGER NOT NULL, seq INTEGER NOT NULL, run_at REAL NOT NULL, lease_until REAL, worker TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, finished_at REAL, expires_at REAL,
        body TEXT NOT NULL, held INTEGER NOT NULL DEFAULT 0, owner TEXT,
        PRIMARY KEY (queue, id))""",
    # Partial indexes: a job sits only in the one its state needs, so a transition touches few of them.
    "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority, seq) WHERE state = 'waiting'",
    "CREATE INDEX IF NOT EXISTS jobs_delayed ON jobs (queue, run_at) WHERE state = 'delayed'",
    # Retention sees only jobs no waiting parent holds (held = 1: see flow_links).
    "CREATE INDEX IF NOT EXISTS jobs_done ON jobs (queue, state, finished_at, seq)"
    " WHERE finished_at IS NOT NULL AND held = 0",
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (queue, state, expires_at)"
    " WHERE expires_at IS NOT NULL AND held = 0",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (queue, state, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_recent ON jobs (queue, created_at, seq)",
    # Owners and tags (set when a job is added, never changed), for reads scoped to an owner or a tag.
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (queue, owner, created_at, seq) WHERE owner IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS job_tags (
        queue TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (queue, key, value, id))""",
    "CREATE INDEX IF NOT EXISTS job_tags_job ON job_tags (queue, id)",
    """CREATE TABLE IF NOT EXISTS queues (
        name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0,
        window_start REAL NOT NULL DEFAULT 0, window_used INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0, concurrency INTEGER)""",
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_queue ON events (queue, id)",
    "CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, expires_at REAL NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS records (
        queue TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (queue, kind, key))""",
    # Sliding-window counters (one row per grant, until it lapses) and budgets, for quotas shared by workers.
    "CREATE TABLE IF NOT EXISTS grants (queue TEXT NOT NULL, key TEXT NOT NULL, lapses_at REAL NOT NULL,"
    " amount REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS grants_by_key ON grants (queue, key, lapses_at, amount)",  # covers the SUM
    """CREATE TABLE IF NOT EXISTS budgets (
        queue TEXT NOT NULL, key TEXT NOT NULL, spent REAL NOT NULL, reserved REAL NOT NULL,
        PRIMARY KEY (queue, key))""",
    # A parent's ledger (see backends/_flows.py): its children and dependencies in order, the state it counted for
    # each (NULL: not ended), and whether the link holds the child back from retention.
    """CREATE TABLE IF NOT EXISTS flow_links (
        wq TEXT NOT NULL, wid TEXT NOT NULL, pos INTEGER NOT NULL, cq TEXT NOT NULL, cid TEXT NOT NULL,
        owned INTEGER NOT NULL, state TEXT, held INTEGER NOT NULL,
        PRIMARY KEY (wq, wid, cq, cid))""",
    "CREATE INDEX IF NOT EXISTS flow_links_order ON flow_links (wq, wid, pos)",
    "CREATE INDEX IF NOT EXISTS flow_links_held ON flow_links (cq, cid) WHERE held = 1",
    # Metrics (see backends/_metrics.py): counts per queue, minute, task and field, kept KEPT_MINUTES.
    """CREATE TABLE IF NOT EXISTS metrics (
        queue TEXT NOT NULL, minute INTEGER NOT NULL, name TEXT NOT NULL, field TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (queue, minute, name, field)) WITHOUT ROWID""",
    # Webhooks' outbox (see backends/_outbox.py): each delivery's model in `body`; the columns index what is due.
    """CREATE TABLE IF NOT EXISTS webhooks (
        queue TEXT NOT NULL, id INTEGER NOT NULL, job_id TEXT NOT NULL, state TEXT NOT NULL, next_at REAL,
        lease_until REAL, ended_at REAL, body TEXT NOT NULL, PRIMARY KEY (queue, id))""",
    "CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (queue, next_at) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS webhooks_ended ON webhooks (queue, ended_at) WHERE state != 'pending'",
    "INSERT INTO counters (name, value) VALUES ('job_seq', 0), ('event_id', 0), ('webhook_id', 0)"
    " ON CONFLICT (name) DO NOTHING",
)

_INSERT = (
    "INSERT INTO jobs (queue, id, state, name, priority, seq, run_at, lease_until, worker, cancel_requested,"
    " created_at, finished_at, expires_at, body, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (queue, id) DO NOTHING"
)
_UPDATE = (
    "UPDATE jobs SET state = ?, seq = ?, run_at = ?, lease_until = ?, worker = ?, cancel_requested = ?,"
    " finished_at = ?, expires_at = ?, body = ? WHERE rowid = ?"
)
_SELECT = "SELECT rowid, state, lease_until, body FROM jobs"
# What removing a finished job needs of it: rowid, id, name, attempts, the JSON type of its flow (a parent's ledger
# goes too), owner, and the JSON type of its tags.
_REMOVED = ("rowid, id, name, json_extract(body, '$.attempts'), json_type(body, '$.flow'), owner,"
            " json_type(body, '$.tags')")

_WORK_STATES = (JobState.WAITING, JobState.DELAYED)  # an event in one of these may mean claimable work
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)  # UPDATE ... RETURNING


def _path_of(url: str) -> str:
    prefix = "sqlite:///"
    path = unquote(url[len(prefix) :].split("?", 1)[0]) if url.lower().startswith(prefix) else ""
    if not path or path == ":memory:":
        raise ConfigError(
            f"unusable SQLite URL {mask_url(url)!r}: use sqlite:///relative/path/jobs.db or"
            " sqlite:////absolute/path/jobs.db"
            " (for an in-process store use memory://)"
        )
    return os.path.abspath(path)


def _create_private_file(path: str) -> None:
    """Create the database file 0600 when missing (SQLite gives its -wal and -shm files the same mode); an existing
    file keeps its mode, and any other problem is left for sqlite3.connect to report."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _migrate(c: sqlite3.Connection, version: int) -> None:
    """Bring a file of schema `version` up to SCHEMA_VERSION, step by step, before _SCHEMA makes what is new."""
    if version < 2:  # schema 2 counts each queue's completed jobs, for retention as jobs finish
        c.execute("ALTER TABLE queues ADD COLUMN completed INTEGER NOT NULL DEFAULT 0")
        c.execute("UPDATE queues SET completed = (SELECT COUNT(*) FROM jobs"
                  " WHERE jobs.queue = queues.name AND state = 'completed')")
    # schema 3 adds the records table (schedules)
    if version < 4:  # schema 4: the worker holding a job's lease is `worker` (`owner` is the user a job is for)
        c.execute("ALTER TABLE jobs RENAME COLUMN owner TO worker")
        c.execute("UPDATE jobs SET body = json_set(json_remove(body, '$.owner'), '$.worker', json_extract(body,"
                  " '$.owner')) WHERE json_type(body, '$.owner') IS NOT NULL")
    # schema 5 adds the grants and budgets tables (shared quotas: take, restrict, reserve, settle)
    if version < 6:  # schema 6: flows. Jobs a waiting parent holds back from retention, left out of its indexes
        c.execute("ALTER TABLE jobs ADD COLUMN held INTEGER NOT NULL DEFAULT 0")
        c.execute("DROP INDEX IF EXISTS jobs_done")
        c.execute("DROP INDEX IF EXISTS jobs_expiry")
    if version < 7:  # schema 7: a queue's global concurrency (NULL: none)
        c.execute("ALTER TABLE queues ADD COLUMN concurrency INTEGER")
    if version < 8:  # schema 8: owners (a column) and tags (the job_tags table), indexed
        c.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
    if version < 9:  # schema 9 adds the webhooks table (webhooks' outbox, made by _SCHEMA) and its counter
        c.execute("INSERT INTO counters (name, value) VALUES ('webhook_id', 0) ON CONFLICT (name) DO NOTHING")
    # schema 10 adds the metrics table


def _load(state: str, lease_until: float | None, body: str) -> Job:
    # `state` and `lease_until` columns are authoritative: delayed-job promotion and lease renewal set only them.
    job = Job.model_validate_json(body)
    job.state = JobState(state)
    job.lease_until = lease_until
    return job


def _values(job: Job, rowid: int) -> tuple[Any, ...]:
    return (
        job.state.value, job.seq, job.run_at, job.lease_until, job.worker, int(job.cancel_requested),
        job.finished_at, job.expires_at, job.model_dump_json(), rowid,
    )


def _event_json(row: Row) -> str:
    """`to_event(row).model_dump_json()`, three times faster: the same JSON, without making the model."""
    return to_json({
        "id": str(row[0]), "queue": row[1], "job_id": row[2], "name": row[3], "event": row[4], "state": row[5],
        "at": row[6], "attempt": row[7], "progress": row[8], "error": row[9], "owner": row[10],
    }).decode()


_SCALARS = (str, int, float, bool, type(None))


def _private_copy(job: Job) -> Job | None:
    """A copy of `job` sharing nothing the holder of `job` could change in place, when that is cheap: its
    JSON values are scalars and its progress has no extra fields. Else None."""
    if not (
        isinstance(job.data, _SCALARS) and isinstance(job.checkpoint, _SCALARS) and isinstance(job.result, _SCALARS)
        and not job.progress.extra
    ):
        return None
    mine = transitions.copy(job)
    p = job.progress
    mine.__dict__["progress"] = trusted(Progress, {"percent": p.percent, "message": p.message, "extra": {}})
    return mine


def _error_name(exc: sqlite3.Error) -> str:
    """SQLite's name for the error, as SQLITE_FULL (Python 3.11+; else "", and messages tell instead)."""
    return str(getattr(exc, "sqlite_errorname", "") or "")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


class _Tx:
    """One transaction's new events (drafts, numbered at commit); then what it hands back to the event
    loop: events to publish (other processes' first) and queues to wake."""

    __slots__ = ("drafts", "events", "queues", "results", "wake")

    def __init__(self) -> None:
        self.drafts: list[transitions.Draft] = []
        self.events: list[Event] = []
        self.wake: set[str] = set()
        self.queues: set[str] = set()  # queues whose row this transaction made
        self.results: dict[str, str] = {}  # job id -> result JSON, for the "completed" events that carry it


_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]  # a _Store method, its args and kwargs


class _Step:
    """Flow rules inside one SQLite transaction (see _flows.FlowStore); jobs read once, written back as they change."""

    def __init__(self, store: _Store, tx: _Tx, known: Iterable[tuple[int, Job]] = ()) -> None:
        self.store, self.conn, self.tx = store, store.conn, tx
        self.rows: dict[flows.Key, tuple[int, Job]] = {(j.queue, j.id): (rowid, j) for rowid, j in known}

    def job(self, key: flows.Key) -> Job | None:
        found = self.rows.get(key)
        if found is None:
            found = self.store._get(*key)
            if found is None:
                return None
            self.rows[key] = found
        return found[1]

    def insert(self, job: Job, now: float) -> Job:
        job.seq = self.store._next_seq(1)
        job.note(job.state, job.created_at, "added")
        cur = self.conn.execute(_INSERT, (
            job.queue, job.id, job.state.value, job.name, job.priority, job.seq, job.run_at, None, None, 0,
            job.created_at, None, None, job.model_dump_json(), job.owner,
        ))
        if job.tags:
            self.store.tag([job])
        self.rows[(job.queue, job.id)] = (cur.lastrowid or 0, job)
        self.rehold((job.queue, job.id))  # its parent's ledger, written first, holds it
        self.tx.drafts.append(transitions.draft(job, "added", now))
        if job.queue not in self.store.queues:
            self.conn.execute("INSERT INTO queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (job.queue,))
            self.tx.queues.add(job.queue)
        self.tx.wake.add(job.queue)
        return job

    def save(self, job: Job, was: JobState, now: float) -> None:
        rowid, _ = self.rows[(job.queue, job.id)]
        self.conn.execute(_UPDATE, _values(job, rowid))
        if (was is JobState.COMPLETED) != (job.state is JobState.COMPLETED):
            self.conn.execute(
                "UPDATE queues SET completed = completed + ? WHERE name = ? AND"
                " (SELECT held FROM jobs WHERE rowid = ?) = 0", (1 if job.state is JobState.COMPLETED else -1,
                                                                  job.queue, rowid))
        if job.state is JobState.WAITING or job.state is JobState.DELAYED:
            self.tx.wake.add(job.queue)

    def notes(self, job: Job) -> transitions.Notes:
        return None

    def emit(self, draft: transitions.Draft) -> None:
        self.tx.drafts.append(draft)

    def links(self, waiter: flows.Key) -> list[flows.Link]:
        return [flows.Link(waiter, (cq, cid), pos, bool(owned), None if state is None else JobState(state), bool(held))
                for pos, cq, cid, owned, state, held in self.conn.execute(
                    "SELECT pos, cq, cid, owned, state, held FROM flow_links WHERE wq = ? AND wid = ? ORDER BY pos",
                    waiter)]

    def link(self, waiter: flows.Key, child: flows.Key) -> flows.Link | None:
        row = self.conn.execute("SELECT pos, owned, state, held FROM flow_links WHERE wq = ? AND wid = ? AND cq = ?"
                                " AND cid = ?", (*waiter, *child)).fetchone()
        if row is None:
            return None
        pos, owned, state, held = row
        return flows.Link(waiter, child, pos, bool(owned), None if state is None else JobState(state), bool(held))

    def put(self, links: Sequence[flows.Link]) -> None:
        self.conn.executemany(
            "INSERT INTO flow_links (wq, wid, pos, cq, cid, owned, state, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (wq, wid, cq, cid) DO UPDATE SET pos = excluded.pos, owned = excluded.owned,"
            " state = excluded.state, held = excluded.held",
            [(*link.waiter, link.pos, *link.child, int(link.owned), None if link.state is None else link.state.value,
              int(link.held)) for link in links])

    def clear(self, waiter: flows.Key) -> None:
        self.conn.execute("DELETE FROM flow_links WHERE wq = ? AND wid = ?", waiter)

    def failed(self, job: Job, now: float) -> None:
        self.store._write_deliveries(job.queue, [job], now)

    def rehold(self, child: flows.Key) -> None:
        (held,) = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM flow_links WHERE cq = ? AND cid = ? AND held = 1)", child).fetchone()
        row = self.conn.execute("SELECT rowid, held, state FROM jobs WHERE queue = ? AND id = ?", child).fetchone()
        if row is None or bool(row[1]) == bool(held):
            return
        self.conn.execute("UPDATE jobs SET held = ? WHERE rowid = ?", (int(held), row[0]))
        if row[2] == "completed":
            self.conn.execute("UPDATE queues SET completed = completed + ? WHERE name = ?", (-1 if held else 1,
                                                                                           child[0]))


class _Store:
    """The SQL side. Every method runs on the connection's thread, and `transaction` makes each call atomic."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.last_event = 0  # highest event id this instance has written, or read for its subscribers
        self.listening = False  # set from the loop: someone here subscribes or waits, so others' events matter
        self.data_version = -1
        self.paused: set[str] = set()
        self.queues: set[str] = set()  # queues known to have their row in the queues table
        # Jobs this connection claimed, by (queue, id): the body written then and the job it holds, so
        # finish can skip parsing the body again while it is unchanged. Only a cache: cleared when full.
        self.claimed: dict[tuple[str, str], tuple[str, Job]] = {}
        self._since_trim = 0
        self._trim_queues: set[str] = set()
        self.counted: dict[str, int] = {}  # queue -> the minute metrics were last counted in here

    # -- plumbing ----------------------------------------------------------------------------------
    def setup(self, create: bool = True) -> None:
        c = self.conn
        if not create and c.execute("PRAGMA user_version").fetchone()[0] == 0:
            raise ConfigError(f"{c.execute('PRAGMA database_list').fetchone()[2]} is not a jobkit database (it has no"
                              " jobkit schema): check the URL (or JOBKIT_URL)")
        c.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = NORMAL")
        c.execute("BEGIN IMMEDIATE")
        try:
            (version,) = c.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the SQLite database was written by a newer jobkit (schema {version}, this one knows"
                    f" {SCHEMA_VERSION}): upgrade jobkit, or use another sqlite:///path"
                )
            if version:
                _migrate(c, version)
            for statement in _SCHEMA:
                c.execute(statement)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        (self.last_event,) = c.execute("SELECT value FROM counters WHERE name = 'event_id'").fetchone()
        (self.data_version,) = c.execute("PRAGMA data_version").fetchone()
        self.paused = {n for (n,) in c.execute("SELECT name FROM queues WHERE paused = 1")}

    def transaction(self, calls: Sequence[_Call]) -> tuple[list[tuple[bool, Any]], _Tx]:
        """Run calls in one transaction, each atomic on its own: one that raises is rolled back to its
        savepoint and its error returned, as (False, error); the others' results as (True, result)."""
        c = self.conn
        tx = _Tx()
        results: list[tuple[bool, Any]] = []
        c.execute("BEGIN IMMEDIATE")
        try:
            if len(calls) == 1:  # no savepoint needed: an error rolls the whole transaction back
                fn, args, kwargs = calls[0]
                results.append((True, fn(self, tx, *args, **kwargs)))
            else:
                for fn, args, kwargs in calls:
                    part = _Tx()
                    c.execute("SAVEPOINT call")
                    try:
                        result = fn(self, part, *args, **kwargs)
                    except Exception as exc:  # noqa: BLE001 - it is that call's error, handed to its caller
                        c.execute("ROLLBACK TO call")
                        c.execute("RELEASE call")
                        results.append((False, exc))
                        continue
                    c.execute("RELEASE call")
                    tx.drafts.extend(part.drafts)
                    tx.wake.update(part.wake)
                    tx.queues.update(part.queues)
                    tx.results.update(part.results)
                    results.append((True, result))
            last = self._write_events(tx)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self.last_event = last
        self.queues |= tx.queues
        return results, tx

    def _counter(self, name: str, n: int) -> int:
        """Reserve `n` values of a counter; returns the first."""
        if _RETURNING:  # one statement instead of two
            ((end,),) = self.conn.execute(
                "UPDATE counters SET value = value + ? WHERE name = ? RETURNING value", (n, name)
            ).fetchall()
        else:  # older system SQLite libraries are still common under Python
            self.conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, name))
            (end,) = self.conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(end) - n + 1

    def _write_events(self, tx: _Tx) -> int:
        """Store the transaction's events under ids reserved now, after any other process's events not yet seen.

        Ids are reserved under the write lock, so committed ids grow in commit order: the gap between
        our previous ids and these holds exactly the events other processes committed in between.
        """
        drafts = tx.drafts
        if not drafts:
            return self.last_event
        first = self._counter("event_id", len(drafts))
        seen: list[JobEvent] = []
        if first > self.last_event + 1:
            seen, wake = self._others(self.last_event, first - 1)
            tx.wake.update(wake)
        new: list[Row] = [(first + i, *d) for i, d in enumerate(drafts)]
        self.conn.executemany(
            "INSERT INTO events (id, queue, body) VALUES (?, ?, ?)", [(row[0], row[1], _event_json(row)) for row in new]
        )
        self._since_trim += len(new)
        self._trim_queues.update(row[1] for row in new)
        if self._since_trim >= TRIM_EVERY:
            for queue in self._trim_queues:
                self.conn.execute(
                    "DELETE FROM events WHERE queue = ? AND id < (SELECT id FROM events WHERE queue = ?"
                    " ORDER BY id DESC LIMIT 1 OFFSET ?)", (queue, queue, EVENTS_KEPT - 1),
                )
            self._since_trim, self._trim_queues = 0, set()
        tx.events = [*seen, *new]
        return first + len(new) - 1

    def _others(self, after: int, upto: int) -> tuple[list[JobEvent], set[str]]:
        """Events with ids in (after, upto], which other processes wrote, and the queues they may bring work to.

        Only parsed when someone here listens; otherwise naming the queues is enough to wake a worker."""
        if not self.listening:
            rows = self.conn.execute("SELECT DISTINCT queue FROM events WHERE id > ? AND id <= ?", (after, upto))
            return [], {q for (q,) in rows}
        rows = self.conn.execute("SELECT body FROM events WHERE id > ? AND id <= ? ORDER BY id", (after, upto))
        events = [JobEvent.model_validate_json(b) for (b,) in rows]
        return events, {ev.queue for ev in events if ev.state in _WORK_STATES}

    def poll(self, after: int) -> tuple[list[JobEvent], int, set[str]]:
        """If another connection committed since the last poll: others' events after `after` (see `_others`),
        the newest event id, and the queues that may have work (new jobs, or resumed)."""
        c = self.conn
        (version,) = c.execute("PRAGMA data_version").fetchone()
        if version == self.data_version:
            return [], after, set()
        (newest,) = c.execute("SELECT value FROM counters WHERE name = 'event_id'").fetchone()
        newest = min(newest, after + 5000)  # a long backlog is read over several polls
        events, wake = self._others(after, newest)
        self.last_event = max(self.last_event, newest)
        paused = {n for (n,) in c.execute("SELECT name FROM queues WHERE paused = 1")}
        wake |= self.paused - paused
        self.paused = paused
        self.data_version = -1 if newest == after + 5000 else version
        return events, newest, wake

    def _get(self, queue: str, job_id: str) -> tuple[int, Job] | None:
        row = self.conn.execute(f"{_SELECT} WHERE queue = ? AND id = ?", (queue, job_id)).fetchone()
        return None if row is None else (row[0], _load(*row[1:]))

    def _next_seq(self, n: int) -> int:
        return self._counter("job_seq", n) if n else 0

    # -- producer ----------------------------------------------------------------------------------
    def add(self, tx: _Tx, jobs: Sequence[Job]) -> list[Job]:
        c = self.conn
        seq = self._next_seq(len(jobs))
        out: list[Job] = []
        tagged: list[Job] = []
        now = time.time()
        for i, job in enumerate(jobs):
            stored = transitions.copy(job)
            stored.seq = seq + i
            stored.state = JobState.DELAYED if stored.run_at > stored.created_at else JobState.WAITING
            stored.note(stored.state, stored.created_at, "added")
            cur = c.execute(_INSERT, (
                stored.queue, stored.id, stored.state.value, stored.name, stored.priority, stored.seq, stored.run_at,
                stored.lease_until, stored.worker, int(stored.cancel_requested), stored.created_at,
                stored.finished_at, stored.expires_at, stored.model_dump_json(), stored.owner,
            ))
            if cur.rowcount == 1:
                tx.drafts.append(transitions.draft(stored, "added", now))
                out.append(stored)
                if stored.tags:
                    tagged.append(stored)
            else:
                found = self._get(job.queue, job.id)
                assert found is not None
                out.append(found[1])
        if tagged:
            self.tag(tagged)
        new_in = {d[0] for d in tx.drafts}
        rowless = new_in - self.queues  # queue rows are never deleted: one known to exist needs no insert
        if rowless:
            c.executemany("INSERT INTO queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING", [(q,) for q in rowless])
            tx.queues.update(rowless)
        tx.wake.update(new_in)
        return out

    def tag(self, jobs: Iterable[Job]) -> None:
        """Index the tags of jobs just inserted."""
        self.conn.executemany("INSERT INTO job_tags (queue, id, key, value) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              [(j.queue, j.id, k, v) for j in jobs for k, v in j.tags.items()])

    def cancel(self, tx: _Tx, queue: str, job_id: str, now: float) -> Job | None:
        found = self._get(queue, job_id)
        if found is None:
            return None
        rowid, job = found
        if job.parent is not None or job.dependents or job.flow is not None:
            flows.cancel(_Step(self, tx, [(rowid, job)]), job, now)
            return job
        events = transitions.cancel(job, now)
        if not events:
            return job
        tx.drafts.extend(events)
        self.conn.execute(_UPDATE, _values(job, rowid))
        return job

    def set_paused(self, tx: _Tx, queue: str, paused: bool) -> None:
        self.conn.execute(
            "INSERT INTO queues (name, paused) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
            (queue, int(paused)),
        )
        if not paused:
            tx.wake.add(queue)

    def set_concurrency(self, tx: _Tx, queue: str, limit: int | None) -> None:
        self.conn.execute(
            "INSERT INTO queues (name, concurrency) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency", (queue, limit),
        )
        tx.queues.add(queue)
        tx.wake.add(queue)

    def retry(self, tx: _Tx, queue: str, job_ids: Sequence[str] | None, now: float, limit: int) -> int:
        c = self.conn
        if job_ids is None:
            rows = c.execute(
                f"{_SELECT} WHERE queue = ? AND state = 'failed' ORDER BY rowid LIMIT ?", (queue, limit)
            ).fetchall()
        else:
            ids = list(dict.fromkeys(job_ids))
            by_id: dict[str, Any] = {}
            for part in _chunks(ids):
                for row in c.execute(
                    "SELECT id, rowid, state, lease_until, body FROM jobs WHERE queue = ?"
                    f" AND id IN ({_marks(len(part))}) AND state IN ('failed', 'cancelled')", (queue, *part),
                ):
                    by_id[row[0]] = row[1:]
            rows = [by_id[i] for i in ids if i in by_id]
        updates = []
        for rowid, state, lease_until, body in rows:
            job = _load(state, lease_until, body)
            tx.drafts.extend(transitions.reset(job, now))
            updates.append(_values(job, rowid))
        c.executemany(_UPDATE, updates)
        if updates:
            tx.wake.add(queue)
        return len(updates)

    def clean(
        self, tx: _Tx, queue: str, state: JobState, finished_before: float | None, keep_last: int | None,
        expired_at: float | None, limit: int,
    ) -> int:
        c = self.conn
        # `state` is a JobState member, so inlining its value is safe and lets SQLite use the partial indexes.
        where = f"queue = ? AND state = '{state.value}' AND held = 0"
        doomed: list[str] = []
        params: list[Any] = [queue]
        if finished_before is not None:
            doomed.append("(finished_at < ? OR finished_at IS NULL)")
            params.append(finished_before)
        if expired_at is not None:
            doomed.append("expires_at < ?")
            params.append(expired_at)
        if keep_last is not None:
            edge = c.execute(
                f"SELECT finished_at, seq FROM jobs WHERE {where} AND finished_at IS NOT NULL"
                " ORDER BY finished_at DESC, seq DESC LIMIT 1 OFFSET ?", (queue, keep_last),
            ).fetchone()
            if edge is not None:
                doomed.append("(finished_at, seq) <= (?, ?) OR finished_at IS NULL")
                params.extend(edge)
        if not doomed or limit <= 0:
            return 0
        rows = c.execute(
            f"SELECT {_REMOVED} FROM jobs WHERE {where}"
            f" AND ({' OR '.join(doomed)}) ORDER BY finished_at, seq LIMIT ?", (*params, limit),
        ).fetchall()
        self._remove(tx, queue, state, rows[::-1], time.time())
        return len(rows)

    def _remove(self, tx: _Tx, queue: str, state: JobState, rows: Sequence[tuple[Any, ...]], now: float) -> None:
        """Delete finished jobs given as rows of _REMOVED, their tags, and the ledgers of the parents among them;
        event "removed" for each, in order."""
        if not rows:
            return
        self.conn.executemany("DELETE FROM jobs WHERE rowid = ?", [(r[0],) for r in rows])
        parents = [(queue, r[1]) for r in rows if r[4] is not None]
        if parents:
            self.conn.executemany("DELETE FROM flow_links WHERE wq = ? AND wid = ?", parents)
        tagged = [(queue, r[1]) for r in rows if r[6] is not None]
        if tagged:
            self.conn.executemany("DELETE FROM job_tags WHERE queue = ? AND id = ?", tagged)
        if state is JobState.COMPLETED:
            self.conn.execute("UPDATE queues SET completed = completed - ? WHERE name = ?", (len(rows), queue))
        tx.drafts.extend(
            (queue, job_id, name, "removed", state.value, now, attempts, None, None, owner)
            for _, job_id, name, attempts, _, owner, _ in rows
        )

    def _keep_completed(self, tx: _Tx, queue: str, keep: int, now: float) -> None:
        """Remove the oldest completed jobs of `queue` beyond the newest `keep` (O(removed), by the counter)."""
        row = self.conn.execute("SELECT completed FROM queues WHERE name = ?", (queue,)).fetchone()
        over = 0 if row is None else row[0] - keep
        if over <= 0:
            return
        rows = self.conn.execute(
            f"SELECT {_REMOVED} FROM jobs"
            " WHERE queue = ? AND state = 'completed' AND finished_at IS NOT NULL AND held = 0"
            " ORDER BY finished_at, seq LIMIT ?", (queue, over),
        ).fetchall()
        self._remove(tx, queue, JobState.COMPLETED, rows, now)

    # -- worker ------------------------------------------------------------------------------------
    def claim(
        self, tx: _Tx, queue: str, worker: str, limit: int, lease: float, now: float,
        names: Collection[str] | None, rate_limit: RateLimit | None, caps: Mapping[str, int] | None = None,
    ) -> ClaimResult:
        c = self.conn
        due, paused, start, used, most = c.execute(  # the next delayed job's run_at, and the queue's row (or defaults)
            "SELECT (SELECT MIN(run_at) FROM jobs WHERE queue = ? AND state = 'delayed'), COALESCE(paused, 0),"
            " COALESCE(window_start, 0.0), COALESCE(window_used, 0), concurrency FROM (SELECT 1)"
            " LEFT JOIN queues ON name = ?",
            (queue, queue),
        ).fetchone()
        if due is not None and due <= now:
            c.execute(
                "UPDATE jobs SET state = 'waiting' WHERE queue = ? AND state = 'delayed' AND run_at <= ?", (queue, now)
            )
            due = self._next_due(queue)
        next_due = None if due is None else max(0.0, due - now)
        if paused or limit <= 0:
            return ClaimResult([], None)
        if most is not None:
            (active,) = c.execute("SELECT COUNT(*) FROM jobs WHERE queue = ? AND state = 'active'", (queue,)).fetchone()
            if active >= most:
                return ClaimResult([], CONCURRENCY_RECHECK, True)
            limit = min(limit, most - active)
        if rate_limit is not None:
            start, used, limit, retry_in = limiter.grant(rate_limit, start, used, limit, now)
            if not limit:
                return ClaimResult([], retry_in)
        claimed = self._take(tx, queue, worker, limit, now + lease, now, names, caps)
        if rate_limit is not None:
            c.execute(
                "INSERT INTO queues (name, window_start, window_used) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET window_start = excluded.window_start, window_used = excluded.window_used",
                (queue, start, used - (limit - len(claimed))),
            )
        dry = len(claimed) < limit  # fewer waiting jobs than the claim allowed
        return ClaimResult(claimed, next_due if dry or not claimed else None, dry)

    def _next_due(self, queue: str) -> float | None:
        (due,) = self.conn.execute(
            "SELECT MIN(run_at) FROM jobs WHERE queue = ? AND state = 'delayed'", (queue,)
        ).fetchone()
        return None if due is None else float(due)

    def _take(
        self, tx: _Tx, queue: str, worker: str, limit: int, lease_until: float, now: float,
        names: Collection[str] | None, caps: Mapping[str, int] | None = None,
    ) -> list[Job]:
        rows = self._ready(queue, limit, names, caps)
        claimed, updates = [], []
        remembered = self.claimed
        if len(remembered) + len(rows) > CLAIMED_KEPT:
            remembered.clear()
        for rowid, body in rows:
            try:
                job = Job.model_validate_json(body)
            except ValidationError as exc:  # one job's record must not stop every claim of its queue
                self._quarantine(tx, rowid, body, exc, now)
                continue
            tx.drafts.append(transitions.claim(job, worker, lease_until, now))
            text = job.model_dump_json()
            mine = _private_copy(job)
            if mine is not None:
                remembered[queue, job.id] = (text, mine)
            claimed.append(job)
            updates.append((worker, lease_until, text, rowid))
        self.conn.executemany(
            "UPDATE jobs SET state = 'active', worker = ?, lease_until = ?, cancel_requested = 0, body = ?"
            " WHERE rowid = ?", updates,
        )
        return claimed

    def _ready(self, queue: str, limit: int, names: Collection[str] | None, caps: Mapping[str, int] | None
               ) -> list[tuple[int, str]]:
        """Up to `limit` waiting jobs (rowid, body) by (priority, seq), of `names` if given, at most `caps[name]`
        of a capped name. A read that passed over jobs of a name whose cap it reached goes on after its last row,
        without that name: at most one read more per capped name."""
        if names is not None and not names:
            return []
        left = dict(caps or {})
        out: list[tuple[int, str]] = []
        after: tuple[int, int] | None = None
        while len(out) < limit:
            sql = "SELECT rowid, body, name, priority, seq FROM jobs WHERE queue = ? AND state = 'waiting'"
            params: list[Any] = [queue]
            if names is not None:
                sql += f" AND name IN ({_marks(len(names))})"
                params.extend(names)
            full = [n for n, room in left.items() if room <= 0]
            if full:
                sql += f" AND name NOT IN ({_marks(len(full))})"
                params.extend(full)
            if after is not None:
                sql += " AND (priority, seq) > (?, ?)"
                params.extend(after)
            want = limit - len(out)
            rows = self.conn.execute(f"{sql} ORDER BY priority, seq LIMIT ?", (*params, want)).fetchall()
            for rowid, body, name, _, _ in rows:
                room = left.get(name)
                if room is not None:
                    if room <= 0:
                        continue
                    left[name] = room - 1
                out.append((rowid, body))
            if len(rows) < want:
                break
            after = rows[-1][3:]
        return out

    def _quarantine(self, tx: _Tx, rowid: int, body: str, exc: ValidationError, now: float) -> None:
        """Fail a claimed job whose stored record cannot be read, rewritten as a job that can (see transitions)."""
        queue, job_id, name, created_at, seq = self.conn.execute(
            "SELECT queue, id, name, created_at, seq FROM jobs WHERE rowid = ?", (rowid,)).fetchone()
        job = transitions.unreadable(queue, job_id, name, created_at, seq, body, exc, now)
        log.error("job %s (%s) in %s: %s", job_id, name, queue, job.error)
        tx.drafts.append(transitions.draft(job, "failed", now, error=job.error))
        self.conn.execute(_UPDATE, _values(job, rowid))

    def _held(self, queue: str, worker: str, job_ids: Sequence[str]) -> dict[str, tuple[int, Job]]:
        """The ACTIVE jobs among `job_ids` that `worker` holds; each parsed only if changed since we claimed it."""
        held: dict[str, tuple[int, Job]] = {}
        ids = list(dict.fromkeys(job_ids))
        remembered = self.claimed
        for part in _chunks(ids):
            for job_id, rowid, lease_until, body, held_back in self.conn.execute(
                f"SELECT id, rowid, lease_until, body, held FROM jobs WHERE queue = ? AND id IN ({_marks(len(part))})"
                " AND state = 'active' AND worker = ?", (queue, *part, worker),
            ):
                mine = remembered.pop((queue, job_id), None)
                if mine is not None and mine[0] == body:  # lease renewals change only the column
                    job = mine[1]
                    transitions.assign(job, state=JobState.ACTIVE, lease_until=lease_until)
                else:
                    job = _load("active", lease_until, body)
                held[job_id] = (rowid if not held_back else -rowid, job)  # negative: a parent holds it back
        for job_id in ids:
            remembered.pop((queue, job_id), None)
        return held

    def renew(self, tx: _Tx, queue: str, worker: str, job_ids: Sequence[str], lease_until: float) -> dict[str, bool]:
        out: dict[str, bool] = {}
        ids = list(dict.fromkeys(job_ids))
        for part in _chunks(ids):
            for job_id, cancel_requested in self.conn.execute(
                f"SELECT id, cancel_requested FROM jobs WHERE queue = ? AND id IN ({_marks(len(part))})"
                " AND state = 'active' AND worker = ?", (queue, *part, worker),
            ):
                out[job_id] = bool(cancel_requested)
        self.conn.executemany(
            "UPDATE jobs SET lease_until = ? WHERE queue = ? AND id = ?", [(lease_until, queue, i) for i in out]
        )
        return out

    def finish(
        self, tx: _Tx, queue: str, worker: str, outcomes: Sequence[Outcome], now: float, keep: int | None = None,
        keep_failed: int | None = None,
    ) -> list[Job]:
        held = self._held(queue, worker, [oc.job_id for oc in outcomes])
        todo = [(oc, found) for oc in outcomes if (found := held.pop(oc.job_id, None)) is not None]
        seq = self._next_seq(sum(oc.state not in TERMINAL_STATES for oc, _ in todo))
        moved: list[Job] = []
        ended: list[tuple[Any, ...]] = []
        retried: list[tuple[Any, ...]] = []
        completed = 0
        linked: list[tuple[int, Job]] = []
        tally: _metrics.Tally = {}
        for oc, (rowid, job) in todo:
            held_back = rowid < 0
            rowid = abs(rowid)
            tx.drafts.append(transitions.apply_outcome(job, oc, now))
            if job.state is JobState.COMPLETED:
                result = to_json(job.result).decode()
                if len(result) <= RESULT_IN_EVENT:
                    tx.results[job.id] = result
            if job.state not in TERMINAL_STATES:
                job.seq, seq = seq, seq + 1
                tx.wake.add(queue)
            if job.state in TERMINAL_STATES:
                ended.append((job.state.value, now, job.expires_at, job.model_dump_json(), rowid))
                if job.parent is not None or job.dependents or job.flow is not None:
                    linked.append((rowid, job))
                completed += job.state is JobState.COMPLETED and not held_back
                _metrics.count(tally, job, now)
            else:
                retried.append(_values(job, rowid))
            moved.append(job)
        # Finished jobs keep seq and run_at: leaving them out spares the index updates they would cost.
        self.conn.executemany(
            "UPDATE jobs SET state = ?, worker = NULL, lease_until = NULL, cancel_requested = 0, finished_at = ?,"
            " expires_at = ?, body = ? WHERE rowid = ?", ended,
        )
        self.conn.executemany(_UPDATE, retried)
        self._write_deliveries(queue, moved, now)
        if completed:
            self.conn.execute("UPDATE queues SET completed = completed + ? WHERE name = ?", (completed, queue))
        if tally:
            self._count(queue, tally, now)
        if linked:
            step = _Step(self, tx, linked)
            for _, job in linked:
                flows.ended(step, job, now)
        if keep is not None:
            self._keep_completed(tx, queue, keep, now)
        if keep_failed is not None and (linked or any(job.state is JobState.FAILED for job in moved)):
            # No counter here (failures are rare): the index finds the newest `keep_failed`, O(keep_failed).
            self.clean(tx, queue, JobState.FAILED, None, keep_failed, None, KEEP_ALL)
        return moved

    def _count(self, queue: str, tally: _metrics.Tally, now: float) -> None:
        """Add a finish's counts to the queue's minute; the first finish of a minute here drops what is past
        KEPT_MINUTES."""
        minute = int(now // 60)
        if self.counted.get(queue) != minute:
            self.counted[queue] = minute
            self.conn.execute("DELETE FROM metrics WHERE queue = ? AND minute <= ?",
                              (queue, minute - _metrics.KEPT_MINUTES))
        self.conn.executemany(
            "INSERT INTO metrics (queue, minute, name, field, n) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (queue, minute, name, field) DO UPDATE SET n = n + excluded.n",
            [(queue, minute, name, field, n) for (name, field), n in tally.items()],
        )

    def set_progress(self, tx: _Tx, queue: str, worker: str, job_id: str, progress: Progress) -> bool:
        row = self.conn.execute(
            "SELECT rowid, name, json_extract(body, '$.attempts'), owner FROM jobs WHERE queue = ? AND id = ?"
            " AND state = 'active' AND worker = ?", (queue, job_id, worker),
        ).fetchone()
        if row is None:
            return False
        rowid, name, attempts, owner = row
        self.conn.execute(
            "UPDATE jobs SET body = json_set(body, '$.progress', json(?)) WHERE rowid = ?",
            (progress.model_dump_json(), rowid),
        )
        tx.drafts.append((queue, job_id, name, "progress", "active", time.time(), attempts, progress, None, owner))
        return True

    def set_checkpoint(self, tx: _Tx, queue: str, worker: str, job_id: str, checkpoint: str) -> bool:
        cur = self.conn.execute(
            "UPDATE jobs SET body = json_set(body, '$.checkpoint', json(?)) WHERE queue = ? AND id = ?"
            " AND state = 'active' AND worker = ?", (checkpoint, queue, job_id, worker),
        )
        return cur.rowcount == 1

    def recover(self, tx: _Tx, queue: str, now: float) -> list[Job]:
        rows = self.conn.execute(
            "SELECT rowid, state, lease_until, body FROM jobs WHERE queue = ? AND state = 'active'"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY rowid", (queue, now),
        ).fetchall()
        seq = self._next_seq(len(rows))
        moved, updates = [], []
        for rowid, state, lease_until, body in rows:
            job = _load(state, lease_until, body)
            tx.drafts.extend(transitions.stall(job, now))
            if job.state is JobState.WAITING:
                job.seq, seq = seq, seq + 1
            updates.append(_values(job, rowid))
            moved.append(job)
        self.conn.executemany(_UPDATE, updates)
        self._write_deliveries(queue, moved, now)
        tally: _metrics.Tally = {}
        for job in moved:  # those failed past max_stalls
            _metrics.count(tally, job, now)
        if tally:
            self._count(queue, tally, now)
        if moved:
            tx.wake.add(queue)
        linked = [(u[-1], j) for u, j in zip(updates, moved, strict=True)
                  if j.finished and (j.parent is not None or j.dependents or j.flow is not None)]
        if linked:
            step = _Step(self, tx, linked)
            for _, job in linked:
                flows.ended(step, job, now)
        return moved

    # -- webhooks' outbox ----------------------------------------------------------------------------
    def _write_deliveries(self, queue: str, jobs: Sequence[Job], now: float) -> None:
        """Write the deliveries of the jobs of `queue` that just ended and have a webhook (in the caller's
        transaction): one counter update and one batch of inserts."""
        ended = [job for job in jobs if outbox.wants_delivery(job)]
        if not ended:
            return
        fallback = None
        if any(not job.options.webhook for job in ended):
            row = self.conn.execute("SELECT value FROM records WHERE queue = ? AND kind = ? AND key = ?",
                                    (queue, outbox.RECORD_KIND, outbox.RECORD_KEY)).fetchone()
            fallback = row[0] if row else None
        hooked = [(job, url) for job in ended if (url := job.options.webhook or fallback)]
        if not hooked:
            return
        first = self._counter("webhook_id", len(hooked))
        rows = []
        for i, (job, url) in enumerate(hooked):
            d = outbox.entry(job, url, str(first + i), now)
            rows.append((queue, first + i, d.job_id, d.state, d.next_at, d.model_dump_json()))
        self.conn.executemany("INSERT INTO webhooks (queue, id, job_id, state, next_at, body)"
                              " VALUES (?, ?, ?, ?, ?, ?)", rows)

    def _save_delivery(self, d: WebhookDelivery, now: float) -> None:
        self.conn.execute("UPDATE webhooks SET state = ?, next_at = ?, lease_until = ?, ended_at = ?, body = ?"
                          " WHERE queue = ? AND id = ?", (d.state, d.next_at, d.lease_until,
                                                          None if d.state == "pending" else now, d.model_dump_json(),
                                                          d.queue, int(d.id)))

    def _delivery(self, queue: str, delivery_id: str) -> WebhookDelivery | None:
        if not delivery_id.isdigit():
            return None
        row = self.conn.execute("SELECT body FROM webhooks WHERE queue = ? AND id = ?",
                                (queue, int(delivery_id))).fetchone()
        return None if row is None else WebhookDelivery.model_validate_json(row[0])

    def claim_webhooks(self, tx: _Tx, queue: str, sender: str, limit: int, lease: float, now: float
                       ) -> list[WebhookDelivery]:
        rows = self.conn.execute(
            "SELECT body FROM webhooks WHERE queue = ? AND state = 'pending' AND next_at <= ?"
            " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY next_at, id LIMIT ?", (queue, now, now, limit),
        ).fetchall()
        out = [WebhookDelivery.model_validate_json(body) for (body,) in rows]
        for d in out:
            outbox.claim(d, sender, now + lease)
            self._save_delivery(d, now)
        return out

    def settle_webhook(self, tx: _Tx, queue: str, sender: str, delivery_id: str, attempt: DeliveryAttempt,
                       next_at: float | None, now: float) -> bool:
        d = self._delivery(queue, delivery_id)
        if d is None or not outbox.settle(d, sender, attempt, next_at):
            return False
        self._save_delivery(d, now)
        if d.state != "pending":
            self.conn.execute(
                "DELETE FROM webhooks WHERE queue = ? AND state != 'pending' AND id NOT IN (SELECT id FROM webhooks"
                " WHERE queue = ? AND state != 'pending' ORDER BY ended_at DESC, id DESC LIMIT ?)",
                (queue, queue, DELIVERIES_KEPT))
        return True

    def replay_webhook(self, tx: _Tx, queue: str, delivery_id: str, now: float) -> WebhookDelivery | None:
        d = self._delivery(queue, delivery_id)
        if d is not None:
            outbox.replay(d, now)
            self._save_delivery(d, now)
        return d

    # -- flows -------------------------------------------------------------------------------------
    def add_flow(self, tx: _Tx, specs: Sequence[FlowSpec]) -> list[Job | None]:
        return flows.add(_Step(self, tx), specs, time.time())

    # -- workers -----------------------------------------------------------------------------------
    def heartbeat(self, tx: _Tx, info: WorkerInfo, ttl: float) -> None:
        self.conn.execute(
            "INSERT INTO workers (id, expires_at, body) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, body = excluded.body",
            (info.id, info.seen_at + ttl, info.model_dump_json()),
        )
        # Workers that died without saying goodbye: forget them an hour after their heartbeat ran out.
        self.conn.execute("DELETE FROM workers WHERE expires_at < ?", (info.seen_at - 3600,))

    def forget_worker(self, tx: _Tx, worker_id: str) -> None:
        self.conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    # -- records -----------------------------------------------------------------------------------
    def write_record(self, tx: _Tx, queue: str, kind: str, key: str, value: str | None, version: int | None,
                     add: Sequence[Job]) -> int | None:
        row = self.conn.execute("SELECT version FROM records WHERE queue = ? AND kind = ? AND key = ?",
                                (queue, kind, key)).fetchone()
        current = row[0] if row else 0
        if version is not None and version != current:
            return None
        if value is None:
            self.conn.execute("DELETE FROM records WHERE queue = ? AND kind = ? AND key = ?", (queue, kind, key))
            written = 0
        else:
            written = current + 1
            self.conn.execute(
                "INSERT INTO records (queue, kind, key, version, value) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (queue, kind, key) DO UPDATE SET version = excluded.version, value = excluded.value",
                (queue, kind, key, written, value))
        if add:
            self.add(tx, add)  # INSERT ... ON CONFLICT DO NOTHING: a job id already there stays as it is
        return written

    # -- counters and budgets ------------------------------------------------------------------------
    def _used(self, queue: str, key: str, now: float) -> float:
        self.conn.execute("DELETE FROM grants WHERE queue = ? AND key = ? AND lapses_at <= ?", (queue, key, now))
        (used,) = self.conn.execute("SELECT COALESCE(SUM(amount), 0) FROM grants WHERE queue = ? AND key = ?",
                                    (queue, key)).fetchone()
        return float(used)

    def take(self, tx: _Tx, queue: str, asks: Sequence[Ask], now: float) -> float:
        wait = 0.0
        for ask in asks:
            used = self._used(queue, ask.key, now)
            if used + ask.amount > ask.limit:
                lapses = self.conn.execute("SELECT lapses_at, amount FROM grants WHERE queue = ? AND key = ?"
                                           " ORDER BY lapses_at", (queue, ask.key))
                wait = max(wait, wait_until_fits(lapses, used, ask.amount, ask.limit, now))
        if wait > 0:
            return wait
        self.conn.executemany("INSERT INTO grants (queue, key, lapses_at, amount) VALUES (?, ?, ?, ?)",
                              [(queue, a.key, now + a.window, a.amount) for a in asks])
        return 0.0

    def restrict(self, tx: _Tx, queue: str, key: str, remaining: float, limit: float, until: float,
                 now: float) -> None:
        extra = over_by(self._used(queue, key, now), remaining, limit)
        if extra > 0 and until > now:
            self.conn.execute("INSERT INTO grants (queue, key, lapses_at, amount) VALUES (?, ?, ?, ?)",
                              (queue, key, until, extra))

    def _budget(self, queue: str, key: str) -> Spend:
        row = self.conn.execute("SELECT spent, reserved FROM budgets WHERE queue = ? AND key = ?",
                                (queue, key)).fetchone()
        return Spend(*row) if row else Spend(0.0, 0.0)

    def _set_budget(self, queue: str, key: str, spend: Spend) -> Spend:
        self.conn.execute("INSERT INTO budgets (queue, key, spent, reserved) VALUES (?, ?, ?, ?) ON CONFLICT"
                          " (queue, key) DO UPDATE SET spent = excluded.spent, reserved = excluded.reserved",
                          (queue, key, *spend))
        return spend

    def reserve(self, tx: _Tx, queue: str, key: str, amount: float, limit: float | None) -> tuple[bool, Spend]:
        spend = self._budget(queue, key)
        if limit is not None and spend.spent + spend.reserved + amount > limit:
            return False, spend
        return True, self._set_budget(queue, key, Spend(spend.spent, spend.reserved + amount))

    def settle(self, tx: _Tx, queue: str, key: str, reserved: float, actual: float) -> Spend:
        spend = self._budget(queue, key)
        return self._set_budget(queue, key, Spend(spend.spent + actual, max(0.0, spend.reserved - reserved)))

    def drop_budget(self, tx: _Tx, queue: str, key: str) -> Spend:
        spend = self._budget(queue, key)
        self.conn.execute("DELETE FROM budgets WHERE queue = ? AND key = ?", (queue, key))
        return spend


_Queued = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class SQLiteBackend(Backend):
    """Each state change is atomic: one BEGIN IMMEDIATE transaction, run as one call on aiosqlite's thread,
    or a savepoint in one that changes asked for together share."""

    is_local = True

    def __init__(self, url: str, *, create: bool = True) -> None:
        """`create=False` opens an existing jobkit database only, and never makes a file or a directory."""
        self.url = url
        self.path = _path_of(url)
        self.create = create
        self._db: aiosqlite.Connection | None = None
        self._store: _Store | None = None
        self._hub = EventHub(keep=0)  # `since=` reads the events table, not the hub's memory
        self._last_event = 0  # highest event id published to this process's subscribers
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._listeners = 0  # open subscriptions and pending wait_for_work calls
        self._queued: list[_Queued] = []  # writes waiting for the next transaction (see _write)
        self._flight: asyncio.Task[None] | None = None  # the transaction under way

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.path}>"

    # -- lifecycle ---------------------------------------------------------------------------------
    def _open_lock(self) -> asyncio.Lock:
        # A lock belongs to one loop; scripts may call asyncio.run() more than once.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    async def open(self) -> None:
        if self._db is not None:
            return
        async with self._open_lock():
            if self._db is None:
                await self._connect()

    async def _connect(self) -> None:
        if not self.create and not os.path.isfile(self.path):
            raise ConfigError(f"no SQLite database at {self.path!r}: check the URL (or JOBKIT_URL); a worker or the"
                              " first job added creates it")
        directory = os.path.dirname(self.path)
        try:  # jobs hold payloads and results, which may be confidential: a folder we create is 0700
            if self.create:
                os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the directory {directory!r} for the SQLite database ({exc.strerror or exc}):"
                f" create it yourself, or point JOBKIT_URL at a writable sqlite:///path/jobs.db"
            ) from None
        if self.create:
            _create_private_file(self.path)
        made: list[_Store] = []

        def connector() -> sqlite3.Connection:
            # mode=rw: the file must exist, so a missing one cannot be made between the check above and here
            target, uri = (self.path, False) if self.create else (Path(self.path).as_uri() + "?mode=rw", True)
            conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None, uri=uri)
            made.append(_Store(conn))
            return conn

        db = aiosqlite.Connection(connector, 64)
        # aiosqlite's thread is not a daemon: a backend never closed (a script ending after run_sync)
        # would make the interpreter wait for it forever. SQLite's journal keeps the file safe regardless.
        thread = getattr(db, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.daemon = True
        try:
            await db
            await db._execute(made[0].setup, self.create)  # type: ignore[no-untyped-call]
        except BaseException as exc:
            await db.close()
            # A failed connect stops aiosqlite's thread by itself; let it finish while this loop can still
            # take its last callback (after the loop closes, that callback raises in the thread).
            for _ in range(1000):
                if not (isinstance(thread, threading.Thread) and thread.is_alive()):
                    break
                await asyncio.sleep(0.005)
            if not isinstance(exc, sqlite3.Error):
                raise
            raise ConfigError(self._problem(exc, "open") or (
                f"cannot open the SQLite database {self.path!r} ({exc}): check that the file and its directory"
                " are writable by this user, or point JOBKIT_URL at another sqlite:///path/jobs.db"
            )) from None
        if self._hub.closed:
            self._hub = EventHub(keep=0)
        self._db, self._store, self._last_event = db, made[0], made[0].last_event
        self._store.listening = self._listeners > 0

    async def close(self) -> None:
        self._hub.close()
        poller, self._poller = self._poller, None
        if poller is not None and not poller.done():
            poller.cancel()
            if poller.get_loop() is asyncio.get_running_loop():
                await asyncio.gather(poller, return_exceptions=True)
        db, self._db, self._store = self._db, None, None
        if db is not None:
            await db.close()

    async def _connection(self) -> tuple[aiosqlite.Connection, _Store]:
        if self._db is None or self._store is None:
            await self.open()
        assert self._db is not None and self._store is not None
        return self._db, self._store

    async def _write(self, fn: Callable[Concatenate[_Store, _Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` atomically on the connection's thread, and publish its events here.

        Group commit: one transaction at a time goes to the thread; writes asked for meanwhile, or in the same
        turn of the event loop (a worker's finish and its next claim, a producer's next add), wait and share
        the next transaction and trip to the thread, each in a savepoint of its own.
        """
        await self._connection()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._queued.append((fn, args, kwargs, done))
        flight = self._flight
        if flight is None or flight.done() or flight.get_loop() is not loop:
            self._flight = loop.create_task(self._committer())  # starts after this turn: more may join
        try:
            return cast(T, await done)
        except sqlite3.Error as exc:
            raise self._failure(exc, "write") from exc

    async def _committer(self) -> None:
        """Commit the queued writes, a batch at a time, until none is left."""
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                db, store = self._db, self._store  # the connection of now: close() and open() may come between
                if db is None or store is None:
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(ValueError(f"the SQLite backend {self.path!r} was closed"))
                    continue
                await self._commit(db, store, batch)
                # One more turn, so that the callers just resumed can queue their next writes to join the next batch.
                await asyncio.sleep(0)
        except BaseException:
            queued, self._queued = self._queued, []
            for *_, done in queued:
                done.cancel()
            raise

    async def _commit(self, db: aiosqlite.Connection, store: _Store, batch: builtins.list[_Queued]) -> None:
        """One transaction for `batch`; then its events go out, and only then do the callers resume."""
        calls = [(fn, args, kwargs) for fn, args, kwargs, _ in batch]
        try:
            # aiosqlite has no public call for "run this function on your thread"; one hop per
            # transaction instead of one per statement is what makes the throughput target.
            results, tx = await db._execute(store.transaction, calls)  # type: ignore[no-untyped-call]
        except BaseException as exc:
            for *_, done in batch:
                if done.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._deliver(tx.events, tx.results)
        for queue in tx.wake:
            self._hub.poke(queue)
        for (ok, value), (*_, done) in zip(results, batch, strict=True):
            if not done.done():  # its caller may have been cancelled meanwhile
                if ok:
                    done.set_result(value)
                else:
                    done.set_exception(value)

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        db, _ = await self._connection()
        try:
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise self._failure(exc, "read") from exc

    def _failure(self, exc: sqlite3.Error, what: str) -> BackendError:
        """A BackendError that says what went wrong with the file or its disk, and what to do about it."""
        text = str(exc)
        if "locked" in text or "busy" in text or _error_name(exc) in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return BackendError(f"the SQLite database {self.path!r} stayed locked by another process for over"
                                f" {BUSY_TIMEOUT:g}s ({exc}); retry, or use Redis for this much concurrent writing")
        return BackendError(self._problem(exc, what) or f"the SQLite database {self.path!r} failed to {what} ({exc}):"
                            " check the file and its disk, then retry")

    def _problem(self, exc: sqlite3.Error, what: str) -> str | None:
        """What a full disk, a damaged file or a read-only one means for `what` (read, write, open), else None."""
        name, text, where = _error_name(exc), str(exc), repr(self.path)
        if name == "SQLITE_FULL" or "is full" in text:
            return (f"the disk holding the SQLite database {where} is full ({exc}), so nothing of this {what} was"
                    " done: free space on that disk, then retry (workers retry by themselves)")
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
            return (f"the SQLite database {where} is damaged ({exc}): stop its workers, then restore it from a"
                    f" backup, or recover what it holds with `sqlite3 {self.path} .recover | sqlite3 recovered.db`"
                    " and point JOBKIT_URL at the recovered file")
        if name.startswith("SQLITE_READONLY") or "readonly" in text:
            return (f"the SQLite database {where} cannot be written ({exc}): make the file, its -wal and -shm files"
                    " and their directory writable by this user, then retry")
        if name.startswith("SQLITE_IOERR") or "I/O error" in text:
            return (f"the SQLite database {where} could not {what} ({exc}): check that its disk has free space and"
                    " works, then retry")
        return None

    def _listen(self, change: int) -> None:
        """Count who needs other processes' events; without anyone, polls and transactions skip reading them."""
        self._listeners += change
        if self._store is not None:
            self._store.listening = self._listeners > 0

    def _deliver(self, events: builtins.list[Event], results: dict[str, str] | None = None) -> None:
        """Publish events in id order, each once, whether it came from a transaction or from the poller."""
        fresh = [ev for ev in events if event_id(ev) > self._last_event]
        if fresh:
            self._last_event = event_id(fresh[-1])
            self._hub.publish(fresh, results)

    def _ensure_poller(self) -> None:
        loop = asyncio.get_running_loop()
        if self._poller is None or self._poller.done() or self._poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll(), name=f"jobkit-sqlite-poll {self.path}")

    async def _poll(self) -> None:
        """Notice commits by other processes (PRAGMA data_version moves), publish their events, wake workers."""
        hub = self._hub
        while not hub.closed:
            await asyncio.sleep(POLL_EVERY)
            db, store = self._db, self._store
            if db is None or store is None:
                return
            try:
                events, newest, wake = await db._execute(store.poll, self._last_event)  # type: ignore[no-untyped-call]
            except ValueError:  # the connection closed
                return
            except sqlite3.Error as exc:
                log.debug("polling %s for other processes' changes failed: %s", self.path, exc)
                continue
            self._deliver(events)
            # When nobody listened, skip past what others wrote. Safe: the connection's thread runs calls in
            # order, so every transaction of ours with an id up to `newest` has been delivered already.
            self._last_event = max(self._last_event, newest)
            for queue in wake:
                hub.poke(queue)

    # -- producer ----------------------------------------------------------------------------------
    async def add(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            return []
        return await self._write(_Store.add, jobs)

    async def get(self, queue: str, job_id: str) -> Job | None:
        rows = await self._read("SELECT state, lease_until, body FROM jobs WHERE queue = ? AND id = ?", (queue, job_id))
        return _load(*rows[0]) if rows else None

    async def add_flow(self, specs: Sequence[FlowSpec]) -> builtins.list[Job | None]:
        if not specs:
            return []
        return await self._write(_Store.add_flow, specs)

    async def children(self, queue: str, job_id: str, *, offset: int = 0, limit: int = 100
                       ) -> builtins.list[tuple[ChildLink, Job | None]]:
        lines = await self._read(
            "SELECT cq, cid, owned, state FROM flow_links WHERE wq = ? AND wid = ? ORDER BY pos LIMIT ? OFFSET ?",
            (queue, job_id, max(0, limit), max(0, offset)))
        found: dict[tuple[str, str], Job] = {}
        by_queue: dict[str, list[str]] = {}
        for cq, cid, _, _ in lines:
            by_queue.setdefault(cq, []).append(cid)
        for cq, ids in by_queue.items():
            for part in _chunks(ids):
                rows = await self._read("SELECT id, state, lease_until, body FROM jobs WHERE queue = ?"
                                        f" AND id IN ({_marks(len(part))})", (cq, *part))
                for cid, state, lease_until, body in rows:
                    found[cq, cid] = _load(state, lease_until, body)
        return [(ChildLink(JobRef(queue=cq, id=cid), bool(owned), None if state is None else JobState(state)),
                 found.get((cq, cid))) for cq, cid, owned, state in lines]

    async def list(
        self,
        queue: str,
        *,
        states: Collection[JobState] | None = None,
        name: str | None = None,
        worker: str | None = None,
        owner: str | None = None,
        tag: tuple[str, str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Job]:
        source, where, params = "jobs", ["jobs.queue = ?"], [queue]
        if tag is not None:  # the tag's rows drive the read (CROSS JOIN keeps them first), then sort
            source = "job_tags CROSS JOIN jobs ON jobs.queue = job_tags.queue AND jobs.id = job_tags.id"
            where = ["job_tags.queue = ? AND job_tags.key = ? AND job_tags.value = ?"]
            params = [queue, *tag]
        if owner is not None:
            where.append("jobs.owner = ?")
            params.append(owner)
        if states is not None:
            if not states:
                return []
            where.append(f"jobs.state IN ({_marks(len(states))})")
            params.extend(JobState(s).value for s in states)
        if name is not None:
            where.append("jobs.name = ?")
            params.append(name)
        if worker is not None:
            where.append("jobs.worker = ?")
            params.append(worker)
        rows = await self._read(
            f"SELECT jobs.state, jobs.lease_until, jobs.body FROM {source} WHERE {' AND '.join(where)}"
            " ORDER BY jobs.created_at DESC, jobs.seq DESC LIMIT ? OFFSET ?", (*params, max(0, limit), max(0, offset)),
        )
        return [_load(*row) for row in rows]

    async def counts(self, queue: str) -> QueueCounts:
        rows = await self._read(
            "SELECT state, COUNT(*) FROM jobs WHERE queue = ? GROUP BY state"
            " UNION ALL SELECT '', paused FROM queues WHERE name = ?", (queue, queue),
        )
        tally = {state: n for state, n in rows if state}
        return QueueCounts(**tally, paused=any(bool(n) for state, n in rows if not state))

    async def queues(self) -> builtins.list[str]:
        rows = await self._read(
            "SELECT name FROM queues WHERE paused = 1 OR EXISTS (SELECT 1 FROM jobs WHERE queue = queues.name)"
            " ORDER BY name"
        )
        return [name for (name,) in rows]

    async def cancel(self, queue: str, job_id: str, now: float) -> Job | None:
        return await self._write(_Store.cancel, queue, job_id, now)

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._write(_Store.set_paused, queue, paused)

    async def set_global_concurrency(self, queue: str, limit: int | None) -> None:
        await self._write(_Store.set_concurrency, queue, limit)

    async def global_concurrency(self, queue: str) -> int | None:
        rows = await self._read("SELECT concurrency FROM queues WHERE name = ?", (queue,))
        return rows[0][0] if rows else None

    async def retry(self, queue: str, job_ids: Sequence[str] | None, now: float, limit: int = 1000) -> int:
        return await self._write(_Store.retry, queue, job_ids, now, limit)

    async def clean(
        self,
        queue: str,
        state: JobState,
        *,
        finished_before: float | None = None,
        keep_last: int | None = None,
        expired_at: float | None = None,
        limit: int = 1000,
    ) -> int:
        if state not in TERMINAL_STATES:
            return 0
        return await self._write(_Store.clean, queue, state, finished_before, keep_last, expired_at, limit)

    # -- worker ------------------------------------------------------------------------------------
    async def claim(
        self,
        queue: str,
        worker: str,
        *,
        limit: int,
        lease: float,
        now: float,
        names: Collection[str] | None = None,
        rate_limit: RateLimit | None = None,
        caps: Mapping[str, int] | None = None,
    ) -> ClaimResult:
        # Arm the queue's wake-up before looking: work committed while this claim is on the connection's
        # thread then makes the worker's next wait_for_work return at once instead of being missed.
        self._hub.arm(queue)
        return await self._write(_Store.claim, queue, worker, limit, lease, now, names, rate_limit, caps)

    async def renew(self, queue: str, worker: str, job_ids: Sequence[str], lease: float, now: float) -> dict[str, bool]:
        if not job_ids:
            return {}
        return await self._write(_Store.renew, queue, worker, job_ids, now + lease)

    async def finish(
        self, queue: str, worker: str, outcomes: Sequence[Outcome], now: float, *, keep_completed: int | None = None,
        keep_failed: int | None = None,
    ) -> builtins.list[Job]:
        if not outcomes:
            return []
        return await self._write(_Store.finish, queue, worker, outcomes, now, keep_completed, keep_failed)

    async def metrics(self, queue: str, since: float) -> builtins.list[_metrics.MetricRow]:
        return await self._read("SELECT minute, name, field, n FROM metrics WHERE queue = ? AND minute >= ?"
                                " ORDER BY minute", (queue, int(since // 60)))

    async def set_progress(self, queue: str, worker: str, job_id: str, progress: Progress) -> bool:
        return await self._write(_Store.set_progress, queue, worker, job_id, progress)

    async def set_checkpoint(self, queue: str, worker: str, job_id: str, checkpoint: Any) -> bool:
        text = dump_json(checkpoint, f"checkpoint of job {job_id}")
        return await self._write(_Store.set_checkpoint, queue, worker, job_id, text)

    async def recover(self, queue: str, now: float) -> builtins.list[Job]:
        return await self._write(_Store.recover, queue, now)

    async def wait_for_work(self, queue: str, timeout: float, offer: Offer | None = None) -> None:
        await self._connection()
        self._ensure_poller()
        self._listen(1)
        try:
            await self._hub.wait(queue, timeout)
        finally:
            self._listen(-1)

    # -- events ------------------------------------------------------------------------------------
    async def subscribe(self, queue: str, *, since: str | None = None) -> AsyncIterator[JobEvent]:
        await self._connection()
        self._ensure_poller()
        hub = self._hub
        sub = hub.subscribe(queue)  # live first, so nothing published while the backlog is read is missed
        try:
            if since is None:
                ((after,),) = await self._read("SELECT value FROM counters WHERE name = 'event_id'")
                return self._subscription(hub, queue, sub, [], int(after))
            after = int(since) if since.isdigit() else 0
            rows = await self._read("SELECT body FROM events WHERE queue = ? AND id > ? ORDER BY id", (queue, after))
            return self._subscription(hub, queue, sub, [JobEvent.model_validate_json(b) for (b,) in rows], after)
        except BaseException:
            hub.unsubscribe(queue, sub)
            raise

    def _subscription(
        self, hub: EventHub, queue: str, sub: asyncio.Queue[object], backlog: builtins.list[JobEvent], after: int
    ) -> Subscription:
        self._listen(1)
        return Subscription(hub, queue, backlog, after, sub=sub, on_end=lambda: self._listen(-1))

    # -- workers -----------------------------------------------------------------------------------
    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        await self._write(_Store.heartbeat, info, ttl)

    async def forget_worker(self, worker_id: str) -> None:
        await self._write(_Store.forget_worker, worker_id)

    async def workers(self, now: float, queue: str | None = None) -> builtins.list[WorkerInfo]:
        rows = await self._read("SELECT body FROM workers WHERE expires_at >= ? ORDER BY id", (now,))
        found = [WorkerInfo.model_validate_json(body) for (body,) in rows]
        return [w for w in found if queue is None or queue in w.queues]

    # -- webhooks' outbox ----------------------------------------------------------------------------
    async def webhook_queues(self) -> builtins.list[str]:
        rows = await self._read("SELECT DISTINCT queue FROM webhooks WHERE state = 'pending' ORDER BY queue")
        return [name for (name,) in rows]

    async def claim_webhooks(self, queue: str, sender: str, *, limit: int, lease: float, now: float
                             ) -> builtins.list[WebhookDelivery]:
        return await self._write(_Store.claim_webhooks, queue, sender, limit, lease, now)

    async def settle_webhook(self, queue: str, sender: str, delivery_id: str, attempt: DeliveryAttempt,
                             next_at: float | None, now: float) -> bool:
        return await self._write(_Store.settle_webhook, queue, sender, delivery_id, attempt, next_at, now)

    async def webhook_deliveries(self, queue: str, *, state: DeliveryState | None = None, job_id: str | None = None,
                                 limit: int = 100) -> builtins.list[WebhookDelivery]:
        where, params = "queue = ?", [queue]
        if state is not None:
            where, params = where + " AND state = ?", [*params, state]
        if job_id is not None:
            where, params = where + " AND job_id = ?", [*params, job_id]
        rows = await self._read(f"SELECT body FROM webhooks WHERE {where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [WebhookDelivery.model_validate_json(body) for (body,) in rows]

    async def replay_webhook(self, queue: str, delivery_id: str, now: float) -> WebhookDelivery | None:
        return await self._write(_Store.replay_webhook, queue, delivery_id, now)

    # -- records -----------------------------------------------------------------------------------
    async def read_record(self, queue: str, kind: str, key: str) -> Record | None:
        rows = await self._read("SELECT key, value, version FROM records WHERE queue = ? AND kind = ? AND key = ?",
                                (queue, kind, key))
        return Record(*rows[0]) if rows else None

    async def record_queues(self, kind: str) -> builtins.list[str]:
        rows = await self._read("SELECT DISTINCT queue FROM records WHERE kind = ? ORDER BY queue", (kind,))
        return [name for (name,) in rows]

    async def list_records(self, queue: str, kind: str) -> builtins.list[Record]:
        rows = await self._read("SELECT key, value, version FROM records WHERE queue = ? AND kind = ? ORDER BY key",
                                (queue, kind))
        return [Record(*row) for row in rows]

    async def write_record(
        self, queue: str, kind: str, key: str, value: str | None, *, version: int | None = None,
        add: Sequence[Job] = (),
    ) -> int | None:
        check_record_add(queue, value, version, add)
        return await self._write(_Store.write_record, queue, kind, key, value, version, add)

    # -- counters and budgets ------------------------------------------------------------------------
    async def take(self, queue: str, asks: Sequence[Ask], now: float) -> float:
        check_asks(asks)
        return await self._write(_Store.take, queue, list(asks), now)

    async def restrict(self, queue: str, key: str, remaining: float, limit: float, until: float, now: float) -> None:
        await self._write(_Store.restrict, queue, key, remaining, limit, until, now)

    async def reserve(self, queue: str, key: str, amount: float, limit: float | None) -> tuple[bool, Spend]:
        return await self._write(_Store.reserve, queue, key, amount, limit)

    async def settle(self, queue: str, key: str, reserved: float, actual: float) -> Spend:
        return await self._write(_Store.settle, queue, key, reserved, actual)

    async def drop_budget(self, queue: str, key: str) -> Spend:
        return await self._write(_Store.drop_budget, queue, key)
