"""`Worker`: claims jobs from its queues and runs them — claim loop, lease keeper, batched finishing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from . import schedules
from .attempt import cancelled, interrupted, run_attempt, unrecorded
from .backends import Backend, ClaimResult, Offer
from .config import BackendLike, get_backend
from .context import Context
from .errors import BackendError, ConfigError
from .models import TERMINAL_STATES, Job, JobState, Outcome, RateLimit, WorkerInfo
from .task import Task
from .watchdog import Watchdog

__all__ = ["Worker", "serving_here"]

log = logging.getLogger("jobkit.worker")
_running: weakref.WeakSet[Worker] = weakref.WeakSet()  # this process's started workers, until they stop

STOP_MARGIN = 5.0  # seconds past `grace` that a worker process has to stop after a signal, whatever its tasks do
CANCEL_WAIT = 2.0  # at most, seconds a stopping worker's cancelled jobs get to end before it hands them back anyway

# Claims a worker keeps under way per queue while ready jobs are left behind, where the backend serves them
# side by side (Redis): the next claim goes out while the backend runs the last, so neither waits for the other.
CLAIMS_IN_FLIGHT = 2
# Default jobs per claim. Where two claims overlap (Redis), smaller claims keep that pipeline fuller: 12 drained
# 16% more than 16 at concurrency 50 in the shared harness's adapter (interleaved, docs/benchmarks-redis.md); one at
# a time (memory, SQLite), larger claims mean fewer transactions.
CLAIM_BATCH = 16
OVERLAPPING_CLAIM_BATCH = 12
# Claiming ahead of free slots (`prefetch`): a slot that frees starts a claimed job at once instead of waiting a
# claim's round trip. Only while recent jobs are short (their running mean below PREFETCH_BELOW seconds): a job held
# behind a long one waits that long, while another worker could run it now. A capped task's jobs claimed ahead count
# against its cap (see _room).
PREFETCH_BELOW = 0.05
SCHEDULES_REREAD = 1.0  # seconds between reads of the schedules when none is due sooner (new ones show up)


class _Running:
    """A job this worker holds: its attempt task and context."""

    __slots__ = ("ctx", "job", "task")

    def __init__(self, job: Job, ctx: Context, task: asyncio.Task[None]) -> None:
        self.job, self.ctx, self.task = job, ctx, task


class _Claims:
    """A worker's claiming of one queue: claims under way and what the last one said."""

    __slots__ = ("backlog", "dry", "failures", "flights", "freed", "names", "queue", "retry_in", "wake")

    def __init__(self, queue: str, names: frozenset[str] | None) -> None:
        self.queue, self.names = queue, names
        self.flights: dict[asyncio.Future[ClaimResult | None], int] = {}  # claims under way -> slots each may fill
        self.backlog = False  # the last claim left ready jobs behind: another may go out while one is under way
        self.dry = False  # the last claim found nothing more to claim: wait for work before asking again
        self.retry_in: float | None = None  # when the last claim said a delayed job comes due
        self.failures = 0  # claims failed in a row: the backend is unreachable, back off until it answers again
        self.wake = asyncio.Event()  # a claim under way came back, or enough slots freed for another
        self.freed = asyncio.Event()  # a job of a capped task ended since the last claim went out

    def landed(self, _: object) -> None:
        self.wake.set()


class Worker:
    """Runs tasks from one or more queues with `concurrency` jobs at a time, until `stop()` or SIGTERM."""

    def __init__(
        self,
        tasks: Sequence[Task[Any]],
        *,
        backend: BackendLike = None,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        claim_batch: int | None = None,
        prefetch: int | None = None,
        rate_limit: RateLimit | None = None,
        lease: float = 30.0,
        grace: float = 30.0,
        cancel_grace: float = 5.0,
        heartbeat: float = 5.0,
        renew_every: float | None = None,
        maintenance_every: float = 5.0,
        idle_timeout: float | None = None,
        keep_alive: Callable[[], bool] | None = None,
        embedded: bool = False,
        handle_signals: bool = True,
    ) -> None:
        """`idle_timeout`: stop once nothing has run for that long and no job of its tasks is waiting, delayed or
        active in its queues, unless `keep_alive()` says to stay (the embedded fallback: a handle awaits a job).
        `prefetch`: jobs claimed ahead of free slots at most, while recent jobs are short (see PREFETCH_BELOW); a
        capped task's jobs ahead count against its cap. Default on Redis `min(concurrency, 2 * claim_batch -
        concurrency)`, else 0."""
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if claim_batch is not None and claim_batch < 1:
            raise ConfigError(f"claim_batch must be at least 1, not {claim_batch}")
        if prefetch is not None and prefetch < 0:
            raise ConfigError(f"prefetch must be zero or more, not {prefetch}")
        if not (lease > 0 and math.isfinite(lease)):
            raise ConfigError(f"lease must be a finite number of seconds, more than zero, not {lease}")
        for option, seconds in (("grace", grace), ("cancel_grace", cancel_grace),
                                ("heartbeat", heartbeat), ("renew_every", renew_every),
                                ("maintenance_every", maintenance_every), ("idle_timeout", idle_timeout)):
            if seconds is not None and not (seconds >= 0 and math.isfinite(seconds)):
                raise ConfigError(f"{option} must be a finite number of seconds, zero or more, not {seconds}")
        self.tasks = {t.name: t for t in tasks}
        self._caps = {t.name: t.concurrency for t in tasks if t.concurrency is not None}  # tasks' own concurrency
        # Completed (and failed) jobs kept per queue: the most any of its tasks asks for. Finishing enforces it as jobs
        # end; a task that sets no count leaves it unbounded but by age.
        counts = [c for t in tasks if (c := t.options.keep_completed.count) is not None]
        self.keep_completed = max(counts) if counts else None
        failed = [t.options.keep_failed.count for t in tasks]
        self.keep_failed = max(c for c in failed if c is not None) if failed and None not in failed else None
        self.queues = list(queues or dict.fromkeys(t.queue for t in tasks)) or ["default"]
        self.concurrency = concurrency
        # Jobs asked for per claim: small claims keep one in flight while the last batch runs (instead of a
        # whole `concurrency` of jobs starting and ending in lockstep), and leave work for other workers. The
        # default depends on the backend (see run()).
        self._claim_batch_given = claim_batch
        self.claim_batch = CLAIM_BATCH if claim_batch is None else claim_batch
        self._overlap_at = min(self.claim_batch, concurrency)  # free slots that justify a second claim
        self._prefetch_given = prefetch
        self.prefetch = prefetch or 0  # jobs claimed ahead of free slots at most (see PREFETCH_BELOW); set in run()
        self._ready: dict[str, Job] = {}  # jobs claimed ahead, in claim order: they start as slots free
        self._took: float | None = None  # running mean of recent jobs' durations, seconds
        self._claims: list[_Claims] = []  # one per queue being claimed from
        self._reserved = 0  # slots that claims under way may fill
        self._most_claims = 1  # claims under way at once per queue (set in run(), by the backend)
        self.rate_limit = rate_limit
        self.lease, self.grace, self.cancel_grace = lease, grace, cancel_grace
        self.heartbeat_every = heartbeat
        self.renew_every = renew_every or min(lease / 3, 1.0)
        self.maintenance_every = maintenance_every
        self.idle_timeout = idle_timeout
        self.keep_alive = keep_alive
        self.embedded = embedded
        self.handle_signals = handle_signals and not embedded
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._backend_arg = backend
        self.backend: Backend | None = None
        self._running: dict[str, _Running] = {}
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pending: list[tuple[str, Outcome]] = []
        self._pending_ready = asyncio.Event()
        self._idle_wakes: set[asyncio.Future[None]] = set()  # claim loops waiting in _idle (see _poke)
        self._combine = False  # outcomes go with the next claim (set in run(), by the backend)
        self._flushing = asyncio.Lock()
        self._last_busy = time.monotonic()
        self._strays: set[asyncio.Task[None]] = set()  # attempts ended without their tasks, which still run
        self._watchdog: Watchdog | None = None
        self.started = asyncio.Event()
        self.processed = 0

    def __repr__(self) -> str:
        return f"<Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    @property
    def active(self) -> int:
        return len(self._running)

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called (or a signal or the idle timeout stopped it)."""
        return self._stopping.is_set()

    def touch(self) -> None:
        """Count as busy now: an idle worker waits another `idle_timeout` before it looks for work left."""
        self._last_busy = time.monotonic()

    def serve(self, tasks: Sequence[Task[Any]]) -> None:
        """Run these tasks too (an embedded worker, when a cell defines a task after it started): claims from now on
        ask for their jobs as well."""
        new = [t for t in tasks if self.tasks.get(t.name) is not t]
        if not new:
            return
        self.tasks.update((t.name, t) for t in new)
        self._caps.update((t.name, t.concurrency) for t in new if t.concurrency is not None)
        for c in self._claims:
            if c.names is not None:
                c.names = frozenset(self.tasks)
            c.dry = False
            c.wake.set()
        self._slot_free.set()

    def stop(self) -> None:
        """Stop claiming; running jobs get `grace` seconds to finish, then are handed back."""
        self._stopping.set()
        self._slot_free.set()
        self._poke()

    def _poke(self) -> None:
        """End the claim loops' waits in _idle: stop(), an outcome to write with a claim, or a capped task's slot."""
        for fut in self._idle_wakes:
            _settle(fut)
        self._idle_wakes.clear()

    async def __aenter__(self) -> Worker:
        self._runner = asyncio.ensure_future(self.run())
        started = asyncio.ensure_future(self.started.wait())
        await asyncio.wait((self._runner, started), return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._runner.done():
            self._runner.result()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self._runner

    async def run(self) -> None:
        """Work until stopped (stop(), SIGTERM/SIGINT, or idle_timeout for an embedded worker)."""
        self.backend = backend = await get_backend(self._backend_arg)
        # A backend that finishes a batch and claims the next in one round trip (Redis) gets the outcomes with
        # the next claim; others get them from the finish loop, which SQLite commits with the claim anyway.
        self._combine = type(backend).finish_and_claim is not Backend.finish_and_claim
        self._most_claims = CLAIMS_IN_FLIGHT if backend.claims_overlap else 1
        if self._claim_batch_given is None and backend.claims_overlap:
            self.claim_batch = OVERLAPPING_CLAIM_BATCH
            self._overlap_at = min(self.claim_batch, self.concurrency)
        if self._prefetch_given is None and backend.claims_overlap:
            # Enough room that a second claim can be under way while the slots run (see PREFETCH_BELOW); from
            # twice a claim's jobs up, the slots alone make that room (and more claims, each carrying fewer
            # outcomes, only cost: 13% less at concurrency 50 with 12 ahead).
            self.prefetch = max(0, min(self.concurrency, 2 * self.claim_batch - self.concurrency))
        loop = asyncio.get_running_loop()
        signals = self._install_signals(loop)
        helpers = [
            loop.create_task(self._heartbeat_loop(backend)),
            loop.create_task(self._lease_loop(backend)),
            loop.create_task(self._finish_loop(backend)),
            loop.create_task(self._maintenance_loop(backend)),
            loop.create_task(self._schedule_loop(backend)),
        ]
        log.info("worker %s started: queues=%s tasks=%s concurrency=%d prefetch=%d backend=%s",
                 self.id, self.queues, sorted(self.tasks), self.concurrency, self.prefetch, type(backend).__name__)
        try:
            for first, what in ((self._beat, "record its heartbeat"), (self._maintain, "run maintenance")):
                try:
                    await first(backend)
                except Exception as exc:  # noqa: BLE001 - the loops try again; claims back off meanwhile
                    log.warning("worker %s could not %s yet: %s", self.id, what, exc)
            self.started.set()
            _running.add(self)
            await asyncio.gather(*(self._claim_loop(backend, q) for q in self.queues))
        finally:
            _running.discard(self)
            await self._shutdown(backend, helpers)
            for sig, previous in signals:
                signal.signal(sig, previous)
            watchdog = self._watchdog
            if watchdog is not None and not (watchdog.armed and any(not t.done() for t in self._strays)):
                watchdog.stop()  # else it stays armed: stray tasks may hold the loop's own shutdown too

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[tuple[signal.Signals, Any]]:
        """SIGTERM/SIGINT handlers proper, not the loop's: they run even while a task blocks the loop, to arm
        the watchdog that bounds the stop at `grace` + STOP_MARGIN."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return []
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous = signal.signal(sig, functools.partial(self._signalled, loop))
            except (ValueError, OSError):  # not available here
                continue
            installed.append((sig, signal.SIG_DFL if previous is None else previous))
        if installed:
            self._watchdog = Watchdog(f"worker {self.id}")
        return installed

    def _signalled(self, loop: asyncio.AbstractEventLoop, signum: int, frame: object) -> None:
        if self._watchdog is not None:
            self._watchdog.arm(self.grace + STOP_MARGIN)
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._on_signal, signal.Signals(signum))

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("worker %s got %s: finishing %d running job(s), claiming no more", self.id, sig.name, self.active)
        self.stop()

    # -- claiming -----------------------------------------------------------------------------------
    async def _claim_loop(self, backend: Backend, queue: str) -> None:
        c = _Claims(queue, frozenset(self.tasks) if self.embedded else None)
        self._claims.append(c)
        try:
            while c.flights or not self._stopping.is_set():
                if self._wants_claim(c):
                    await self._send_claim(backend, c)
                elif c.flights:
                    c.wake.clear()
                    if not any(f.done() for f in c.flights):
                        await c.wake.wait()
                    for flight in [f for f in c.flights if f.done()]:
                        self._reserved -= c.flights.pop(flight)
                        await self._landed(backend, c, flight.exception() or flight.result())
                elif not c.dry:  # every slot is taken: wait until one frees
                    self._slot_free.clear()
                    await self._slot_free.wait()
                elif self._idle_expired():
                    await self._stop_if_done(backend, queue)
                else:
                    c.dry = False
                    err, handed = await self._idle(backend, c)
                    if handed is not None:
                        await self._landed(backend, c, handed)
                    elif err is not None:  # only a hint that work may be ready; the next claim says for sure
                        c.failures += 1
                        await self._backoff(queue, "wait for work", err, c.failures)
        finally:
            self._claims.remove(c)
            for flight, limit in c.flights.items():  # only when the loop fails: their jobs' leases will expire
                flight.cancel()
                self._reserved -= limit

    def _wants_claim(self, c: _Claims) -> bool:
        """Whether to claim now: slots are free or outcomes wait to be written, and the queue is not known dry;
        with a claim under way, only with a backlog and room for one worth a round trip of its own."""
        pending = self._combine and any(q == c.queue for q, _ in self._pending)
        if pending:
            c.dry = False  # outcomes to write go with a claim
        if c.dry or self._stopping.is_set():
            return False
        free = self._room_left()
        if not c.flights:
            return free > 0 or pending
        # A claim under way may bring jobs of capped tasks: the next one's caps would not count them, so none goes.
        return c.backlog and not self._caps and len(c.flights) < self._most_claims and free >= self._overlap_at

    async def _send_claim(self, backend: Backend, c: _Claims) -> None:
        """Claim (with the outcomes ready): under way as a task when there is a backlog, so another can follow."""
        outcomes = self._take(c.queue) if self._combine else []
        limit = min(max(self._room_left(), 0), self.claim_batch)
        c.freed.clear()
        call = self._claim(backend, c.queue, outcomes, limit, c.names, self._room())
        if c.backlog and self._most_claims > 1:
            flight = asyncio.ensure_future(call)
            flight.add_done_callback(c.landed)
            c.flights[flight] = limit
            self._reserved += limit
            return
        try:
            claimed = await call
        except BackendError as exc:
            await self._landed(backend, c, exc)
        else:
            await self._landed(backend, c, claimed)

    async def _landed(self, backend: Backend, c: _Claims, claimed: ClaimResult | BaseException | None) -> None:
        """Start the jobs a claim brought, and note what it said of the queue (or back off after a failure)."""
        if isinstance(claimed, BaseException):
            if not isinstance(claimed, BackendError):
                raise claimed
            c.failures += 1
            c.backlog = False
            await self._backoff(c.queue, "claim", claimed, c.failures)
            return
        c.failures = 0
        if claimed is None:
            return
        for job in claimed.jobs:
            if len(self._running) < self.concurrency and not self._ready:
                self._start(backend, job)
            else:
                self._ready.pop(job.id, None)  # held already: its lease ran out and it was claimed again
                self._ready[job.id] = job
        if claimed.jobs:
            self._last_busy = time.monotonic()
        c.backlog = bool(claimed.jobs) and not claimed.dry
        c.dry, c.retry_in = not c.backlog, claimed.retry_in

    def _room_left(self) -> int:
        """Jobs a claim may bring now: free slots, and room ahead of them while jobs are short (see prefetch)."""
        ahead = self.prefetch if (self.prefetch and self._took is not None
                                  and self._took < PREFETCH_BELOW) else 0
        return self.concurrency + ahead - len(self._running) - len(self._ready) - self._reserved

    def _start_ready(self, backend: Backend) -> None:
        """Start jobs claimed ahead while slots are free."""
        while self._ready and len(self._running) < self.concurrency:
            job = self._ready.pop(next(iter(self._ready)))
            self._start(backend, job)

    def _room(self) -> dict[str, int] | None:
        """How many more jobs of each capped task may start now (see Task.concurrency); None when none is capped."""
        if not self._caps:
            return None
        room = dict(self._caps)
        for job in [r.job for r in self._running.values()] + list(self._ready.values()):
            if job.name in room:  # jobs claimed ahead count: they start as slots free, whatever their task's cap
                room[job.name] -= 1
        return room

    def _freed(self, job: Job) -> None:
        """A job of this worker ended: if its task is capped, its queue's jobs of that task may be claimed again."""
        if job.name in self._caps:
            for c in self._claims:
                if c.queue == job.queue:
                    c.dry = False
                    c.freed.set()
                    self._poke()

    async def _claim(
        self, backend: Backend, queue: str, outcomes: list[Outcome], limit: int, names: frozenset[str] | None,
        caps: dict[str, int] | None = None,
    ) -> ClaimResult | None:
        """Write `outcomes` (if any) and claim up to `limit` jobs; None if the outcomes could not be written."""
        now = time.time()
        if not outcomes:
            return await backend.claim(queue, self.id, limit=limit, lease=self.lease, now=now, names=names,
                                       rate_limit=self.rate_limit, caps=caps)
        try:
            return await backend.finish_and_claim(queue, self.id, outcomes, limit=limit, lease=self.lease, now=now,
                                                  names=names, rate_limit=self.rate_limit,
                                                  keep_completed=self.keep_completed, caps=caps,
                                                  keep_failed=self.keep_failed)
        except Exception as exc:
            self._lost(queue, len(outcomes), exc)
            if isinstance(exc, BackendError):
                raise
            return None

    async def _idle(self, backend: Backend, c: _Claims) -> tuple[BaseException | None, ClaimResult | None]:
        """Wait for work, stop(), a capped task's slot to free, or (when outcomes go with claims) an outcome to
        write; the wait's error, if any, and the jobs handed to this worker meanwhile by an add (see Offer)."""
        wait = 1.0 if c.retry_in is None else min(1.0, c.retry_in)
        if self.idle_timeout is not None:
            wait = min(wait, self.idle_timeout)
        offer = self._offer(backend, c)
        # One future that every reason to stop waiting settles (see _poke), not a task per reason; and no task for
        # the backend's wait either where it can settle the future itself (on_work: 3 loop turns fewer per wait).
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        work: asyncio.Future[None] | None = None
        stop_waiting: Callable[[], object] | None = backend.on_work(c.queue, wait, woken, offer)
        if stop_waiting is None:
            work = asyncio.ensure_future(backend.wait_for_work(c.queue, wait, offer))
            work.add_done_callback(lambda _: _settle(woken))
            stop_waiting = work.cancel
        self._idle_wakes.add(woken)
        try:
            if not (self._stopping.is_set() or (self._caps and c.freed.is_set())):
                await woken
        finally:
            stop_waiting()
            self._idle_wakes.discard(woken)
            taken = offer.close() if offer is not None else None
        err = work.exception() if work is not None and work.done() and not work.cancelled() else None
        if taken is None:
            return err, None
        try:  # an add claimed for this worker: its answer is on its way (one round trip at most)
            return None, await asyncio.shield(taken)
        except BackendError as exc:
            return exc, None

    def _offer(self, backend: Backend, c: _Claims) -> Offer | None:
        """This worker's free slots for an add to claim while it waits, where the backend takes offers. Only a
        worker of one queue offers: its slots are not wanted by another queue's claims meanwhile."""
        if not backend.takes_offers or len(self.queues) != 1 or self._stopping.is_set():
            return None
        limit = min(self.concurrency - len(self._running) - len(self._ready) - self._reserved, self.claim_batch)
        if limit <= 0:
            return None
        return Offer(self.id, limit=limit, lease=self.lease, names=c.names, rate_limit=self.rate_limit,
                     caps=self._room())

    def _take(self, queue: str) -> list[Outcome]:
        """The pending outcomes of `queue`, taken out of the pending list."""
        if not self._pending:
            return []
        mine = [o for q, o in self._pending if q == queue]
        if mine:
            self._pending = [(q, o) for q, o in self._pending if q != queue]
        return mine

    def _lost(self, queue: str, n: int, exc: BaseException) -> None:
        log.error("could not record %d outcome(s) in %s: %s; their leases will expire and they rerun", n, queue, exc)

    async def _backoff(self, queue: str, what: str, exc: BaseException, failures: int) -> None:
        """The backend failed (e.g. Redis restarting): log, then wait before trying again, unless stopped first."""
        delay = min(0.1 * 2 ** (failures - 1), 2.0)
        log_ = log.warning if failures == 1 or failures % 30 == 0 else log.debug  # a long outage stays visible
        log_("worker %s could not %s in %s (attempt %d): %s; retrying in %.1fs", self.id, what, queue, failures, exc,
             delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _stop_if_done(self, backend: Backend, queue: str) -> None:
        """Idle for `idle_timeout`: stop unless a job could still come our way; else look again after as long."""
        seen = self._last_busy
        try:
            done = not (self.keep_alive and self.keep_alive()) and not await self._work_left(backend)
        except BackendError as exc:  # cannot tell: stay, and ask again later
            log.debug("worker %s could not check for work left in %s: %s", self.id, queue, exc)
            done = False
        if done and self._last_busy == seen:  # nobody touched us meanwhile (a submit that found us alive)
            log.debug("worker %s idle for %.1fs with no job left to run: stopping", self.id, self.idle_timeout)
            self.stop()
        else:
            self.touch()

    async def _work_left(self, backend: Backend) -> bool:
        """Whether any job of this worker's tasks is waiting, delayed, active (a lease to recover) or waiting for its
        children in its queues; a paused queue's waiting jobs do not count (resuming it starts a worker again)."""
        for queue in self.queues:
            counts = await backend.counts(queue)
            if counts.waiting + counts.delayed + counts.active + counts.waiting_children == 0:
                continue
            states = {JobState.ACTIVE, JobState.WAITING_CHILDREN}
            if not counts.paused:
                states |= {JobState.WAITING, JobState.DELAYED}
            for name in self.tasks:
                if await backend.list(queue, states=states, name=name, limit=1):
                    return True
        return False

    def _idle_expired(self) -> bool:
        return (
            self.idle_timeout is not None
            and not self._running
            and not self._ready
            and time.monotonic() - self._last_busy >= self.idle_timeout
        )

    def _start(self, backend: Backend, job: Job) -> None:
        stale = self._running.get(job.id)
        if stale is not None:  # its lease ran out and the job was recovered, then handed out again (to us)
            log.warning("job %s: lease lost (recovered while running); abandoning attempt %d for attempt %d",
                        job.id, stale.job.attempts, job.attempts)
            stale.task.cancel()
        ctx = Context(job, backend, self.id, on_stuck=self._abandon, stuck_after=self.cancel_grace)
        task = ctx.runner = asyncio.get_running_loop().create_task(self._attempt(backend, job, ctx))
        self._running[job.id] = _Running(job, ctx, task)

    async def _attempt(self, backend: Backend, job: Job, ctx: Context) -> None:
        started = time.monotonic()
        log.debug("job %s (%s) attempt %d started", job.id, job.name, job.attempts)
        try:
            outcome = await run_attempt(self.tasks.get(job.name), job, ctx)
        except asyncio.CancelledError:
            if self._release(job.id):
                self._freed(job)
                self._start_ready(backend)
            self._wake()
            raise
        except BaseException as exc:  # a bug in deciding the outcome: the attempt still ends
            log.exception("job %s (%s) attempt %d: could not decide its outcome; failing it", job.id, job.name,
                          job.attempts)
            outcome = unrecorded(job, exc, exc)
        took = time.monotonic() - started
        # The slot frees as soon as the outcome is known, so the next claim overlaps this write and
        # batches are not capped at `concurrency`; the job stays leased to us until the write lands.
        if not self._release(job.id):
            return  # a newer attempt of this job holds its lease now (see _start): this outcome is stale
        self._took = took if self._took is None else self._took + (took - self._took) / 8
        self._start_ready(backend)
        self.processed += 1
        self._last_busy = time.monotonic()
        self._freed(job)
        self._wake()
        self._record(job, outcome, took)

    def _abandon(self, ctx: Context) -> None:
        """The task goes on `cancel_grace` after its timeout or forced cancel cancelled it (it swallows
        CancelledError): end its attempt without it, so its slot is free; whatever it does later is ignored."""
        job = ctx.job
        running = self._running.get(job.id)
        if running is None or running.ctx is not ctx:
            return
        del self._running[job.id]
        ctx.abandoned = True
        self._strays.add(running.task)
        running.task.add_done_callback(self._strays.discard)
        log.error("job %s (%s) attempt %d ignored its cancellation for %.1fs (the task catches CancelledError):"
                  " its attempt ends without it and its slot is free, but the task itself goes on in the background",
                  job.id, job.name, job.attempts, self.cancel_grace)
        self.processed += 1
        self._last_busy = time.monotonic()
        self._freed(job)
        self._wake()
        self._record(job, interrupted(job, ctx), time.time() - (job.started_at or time.time()))
        if self.backend is not None:
            self._start_ready(self.backend)

    def _record(self, job: Job, outcome: Outcome, took: float) -> None:
        """Log how the attempt ended and queue its outcome for the finish loop (nobody waits for the write)."""
        level = logging.INFO if outcome.state is JobState.COMPLETED else logging.WARNING
        if log.isEnabledFor(level):
            if outcome.state is JobState.COMPLETED:
                log.info("job %s (%s) attempt %d completed in %.3fs", job.id, job.name, job.attempts, took)
            elif outcome.state in TERMINAL_STATES:
                log.warning("job %s (%s) attempt %d %s after %.3fs: %s", job.id, job.name, job.attempts,
                            outcome.state.value, took, outcome.error)
            else:
                log.warning("job %s (%s) attempt %d failed after %.3fs: %s; will retry in %.1fs (attempt %d of %d)",
                            job.id, job.name, job.attempts, took, outcome.error, max(0.0, outcome.run_at - time.time()),
                            job.attempts + 1, job.options.attempts)
        self._pending.append((job.queue, outcome))
        self._pending_ready.set()
        if self._combine:
            self._poke()

    def _release(self, job_id: str) -> bool:
        """Forget the calling attempt of `job_id`; False if a newer attempt of the job has replaced it."""
        running = self._running.get(job_id)
        if running is None or running.task is not asyncio.current_task():
            return False
        del self._running[job_id]
        return True

    def _wake(self) -> None:
        self._slot_free.set()
        if self._room_left() >= self._overlap_at:
            for c in self._claims:
                if c.flights:
                    c.wake.set()

    # -- finishing, batched: every outcome ready at the same moment goes in one transaction -----------
    async def _finish_loop(self, backend: Backend) -> None:
        if self._combine:  # the claim loops write outcomes with their claims until stop(); then this loop does
            await self._stopping.wait()
            self._pending_ready.set()
        while True:
            await self._pending_ready.wait()
            self._pending_ready.clear()
            await self._flush(backend)

    async def _flush(self, backend: Backend) -> None:
        """Write every outcome decided so far. One flush at a time, so shutdown's flush waits for one under way."""
        async with self._flushing:
            batch, self._pending = self._pending, []
            by_queue: dict[str, list[Outcome]] = {}
            for queue, outcome in batch:
                by_queue.setdefault(queue, []).append(outcome)
            for queue, outcomes in by_queue.items():
                try:
                    await backend.finish(queue, self.id, outcomes, time.time(), keep_completed=self.keep_completed,
                                         keep_failed=self.keep_failed)
                except Exception as exc:  # noqa: BLE001 - the lease will hand these jobs to another worker
                    self._lost(queue, len(outcomes), exc)

    # -- leases, heartbeats, retention ------------------------------------------------------------------
    async def _lease_loop(self, backend: Backend) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            await self._renew(backend)

    async def _renew(self, backend: Backend) -> None:
        by_queue: dict[str, list[str]] = {}
        asked = dict(self._running)
        ahead = dict(self._ready)
        for job in [r.job for r in asked.values()] + list(ahead.values()):
            by_queue.setdefault(job.queue, []).append(job.id)
        for queue, ids in by_queue.items():
            try:
                held = await backend.renew(queue, self.id, ids, self.lease, time.time())
            except Exception as exc:  # noqa: BLE001 - keep trying until the lease runs out
                log.warning("lease renewal failed for %d job(s) in %s: %s", len(ids), queue, exc)
                continue
            for jid in ids:
                if jid in ahead:
                    self._renewed_ahead(ahead[jid], held)
                    continue
                running = self._running.get(jid)
                if running is None or running is not asked.get(jid):
                    continue  # that attempt ended while we asked; the answer is about nothing we run now
                if jid not in held:
                    log.warning("job %s: lease lost (another worker may run it); abandoning this attempt", jid)
                    running.task.cancel()
                elif held[jid] and not running.ctx.cancelled:
                    log.info("job %s: cancel requested", jid)
                    running.ctx.request_cancel(self.cancel_grace)

    def _renewed_ahead(self, job: Job, held: dict[str, bool]) -> None:
        """What a renewal said of a job claimed ahead: lost (forget it), cancel requested (it ends unstarted)."""
        if self._ready.get(job.id) is not job:
            return  # it started meanwhile (its attempt's next renewal says) or was claimed again
        if job.id not in held:
            log.warning("job %s: lease lost before it started (another worker may run it); dropping it", job.id)
            del self._ready[job.id]
        elif held[job.id]:
            log.info("job %s: cancel requested before it started", job.id)
            del self._ready[job.id]
            self.processed += 1
            self._record(job, cancelled(job, "cancelled before it started"), 0.0)
        else:
            return  # still ours, still waiting for a slot
        self._wake()  # room for a claim

    async def _heartbeat_loop(self, backend: Backend) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_every)
            with contextlib.suppress(Exception):
                await self._beat(backend)

    async def _beat(self, backend: Backend) -> None:
        info = WorkerInfo(
            id=self.id, queues=self.queues, names=sorted(self.tasks), host=socket.gethostname(), pid=os.getpid(),
            embedded=self.embedded, concurrency=self.concurrency, active=len(self._running),
        )
        await backend.heartbeat(info, ttl=self.heartbeat_every * 3)

    async def _maintenance_loop(self, backend: Backend) -> None:
        while True:
            await asyncio.sleep(min(self.maintenance_every, self.lease / 2))
            try:
                await self._maintain(backend)
            except Exception as exc:  # noqa: BLE001 - maintenance is retried on the next round
                log.warning("maintenance failed: %s", exc)

    async def _maintain(self, backend: Backend) -> None:
        """Deliver flows' notices left behind, recover expired leases and apply retention (age for every finished
        state, count for completed and failed)."""
        now = time.time()
        for queue in self.queues:
            await backend.redeliver(queue, now)  # flows: what a worker that died owed parents on other queues
            for job in await backend.recover(queue, now):
                log.warning("job %s (%s) lost its lease: now %s (stall %d)",
                            job.id, job.name, job.state.value, job.stalls)
            for state in TERMINAL_STATES:
                await backend.clean(queue, state, expired_at=now, limit=10_000)
            for state, keep in ((JobState.COMPLETED, self.keep_completed), (JobState.FAILED, self.keep_failed)):
                if keep is None:  # finishing keeps it; this catches what other workers (or stalls) left over
                    continue
                for _ in range(10):  # bounded: a queue that grew past it before may need a few rounds
                    if await backend.clean(queue, state, keep_last=keep, limit=10_000) < 10_000:
                        break

    # -- schedules: fire each due tick once (see schedules.py), sleep until the next ------------------------
    async def _schedule_loop(self, backend: Backend) -> None:
        if self.embedded:
            return  # one living only while jobs wait would fire ticks at random: schedules need `jobkit worker`
        try:
            await schedules.declare(backend, self.queues, self.tasks, time.time())
        except Exception as exc:  # noqa: BLE001 - the worker runs without them; the next start declares them again
            log.error("worker %s could not declare its tasks' schedules: %s", self.id, exc)
        while not self._stopping.is_set():
            now = time.time()
            wake = now + SCHEDULES_REREAD
            for queue in self.queues:
                try:
                    due = await schedules.fire_due(backend, queue, self.tasks, now)
                except Exception as exc:  # noqa: BLE001 - a tick not fired now fires on the next round, if in time
                    log.warning("worker %s could not fire the schedules of %s: %s", self.id, queue, exc)
                    continue
                if due is not None:
                    wake = min(wake, due)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(wake - time.time(), 0.0))

    # -- shutdown --------------------------------------------------------------------------------------
    async def _shutdown(self, backend: Backend, helpers: list[asyncio.Task[None]]) -> None:
        if self._running or self._ready:
            log.info("worker %s: waiting up to %.0fs for %d running job(s) and %d claimed ahead", self.id, self.grace,
                     len(self._running), len(self._ready))
            deadline = time.monotonic() + self.grace
            # Jobs claimed ahead start as slots free (they are short: see PREFETCH_BELOW), within the same grace.
            while self._running and (left := deadline - time.monotonic()) > 0:
                await asyncio.wait([r.task for r in self._running.values()], timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
        unstarted, self._ready = list(self._ready.values()), {}
        leftovers = list(self._running.values())
        for r in leftovers:
            r.task.cancel()
        if leftovers or unstarted:
            stuck: set[asyncio.Task[None]] = set()
            if leftovers:
                _, stuck = await asyncio.wait([r.task for r in leftovers],
                                              timeout=min(self.cancel_grace, CANCEL_WAIT))
            for r in leftovers:
                if r.task in stuck:  # it ignores cancellation: hand its job back without it
                    r.ctx.abandoned = True
                    self._strays.add(r.task)
                    self._running.pop(r.job.id, None)
            if stuck:
                log.error("worker %s: %d job(s) ignored cancellation (their tasks catch CancelledError): handing"
                          " them back anyway", self.id, len(stuck))
            await self._flush(backend)  # outcomes already decided win over handing back
            now = time.time()
            back = [(r.job.queue, Outcome(job_id=r.job.id, state=JobState.WAITING, run_at=now,
                                          error="handed back: worker stopped")) for r in leftovers]
            # Jobs claimed ahead never ran: they go back with their claim's attempt given back.
            back += [(j.queue, Outcome(job_id=j.id, state=JobState.WAITING, run_at=now, started=False))
                     for j in unstarted]
            for queue in {q for q, _ in back}:
                with contextlib.suppress(Exception):
                    await backend.finish(queue, self.id, [o for q, o in back if q == queue], now)
            log.warning("worker %s handed back %d unfinished job(s) and %d it had not started", self.id,
                        len(leftovers), len(unstarted))
        await self._flush(backend)
        for h in helpers:
            h.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await backend.forget_worker(self.id)
        log.info("worker %s stopped after %d job(s)", self.id, self.processed)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def serving_here(backend: Backend, queue: str) -> bool:
    """Whether a worker of this process, not an embedded one and not stopping, runs `queue` on `backend`: then
    it is alive for sure, without reading the workers' heartbeats."""
    return any(w.backend is backend and queue in w.queues and not w.embedded and not w.stopping for w in _running)
