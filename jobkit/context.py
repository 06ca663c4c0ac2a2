"""`Context`: what a running task sees — its job, progress, checkpoints, cancellation and a logger."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from .backends import Backend
from .children import Children
from .errors import ConfigError, PayloadError
from .models import FlowStatus, Job, JobState, Progress, dump_json

__all__ = ["Context"]

PROGRESS_INTERVAL = 0.05  # seconds between progress writes; a tight loop of progress() calls is coalesced

_log = logging.getLogger("jobkit.worker")


class Context:
    """Handed to a task on every attempt. Progress is coalesced so a hot loop cannot flood the backend."""

    def __init__(
        self, job: Job, backend: Backend, worker: str, logger: logging.Logger | None = None, *,
        on_stuck: Callable[[Context], None] | None = None, stuck_after: float = 5.0,
    ) -> None:
        """`on_stuck(ctx)` is called when the task is still running `stuck_after` seconds after its timeout or
        forced cancel cancelled it (it swallows CancelledError): the worker then ends the attempt without it."""
        self.job = job
        self.backend = backend
        self.worker = worker
        self._logger = logger
        self._cancel: asyncio.Event | None = None
        self.timed_out = False  # the attempt ran past its timeout
        self.forced = False  # a cancel was requested and the task did not stop within the grace period
        self.abandoned = False  # the attempt ended without its task, which ignored cancellation: drop its writes
        self.runner: asyncio.Task[Any] | None = None  # the asyncio task running this attempt
        self._on_stuck, self._stuck_after = on_stuck, stuck_after
        self._pending: Progress | None = None
        self._last_write = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._warned_extra = False

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry job_id, task and attempt."""
        return logging.LoggerAdapter(
            self._logger or logging.getLogger("jobkit.task"),
            {"job_id": self.job.id, "task": self.job.name, "attempt": self.job.attempts},
        )

    def _cancel_event(self) -> asyncio.Event:
        if self._cancel is None:
            self._cancel = asyncio.Event()
        return self._cancel

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """Which attempt this is, 1 for the first."""
        return self.job.attempts

    @property
    def checkpoint(self) -> Any:
        """The last checkpoint saved by any attempt of this job, or None: resume from it."""
        return self.job.checkpoint

    @property
    def flow(self) -> FlowStatus | None:
        """A flow's parent (or a job with `depends_on`): its children counted by state, and its policy; else None."""
        return self.job.flow

    def children(self, *, state: JobState | str | list[JobState | str] | None = None) -> Children:
        """This job's children and dependencies, each with its id, queue, name, state, payload, result or error:
        `await ctx.children()` for a list, `async for c in ctx.children()` to read a large flow a page at a time."""
        return Children(self.backend, self.job.queue, self.job.id, state=state)

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this job: stop soon, or be cancelled after a grace period."""
        return self._cancel is not None and self._cancel.is_set()

    async def wait_cancelled(self) -> None:
        """Wait until this job is asked to cancel."""
        await self._cancel_event().wait()

    def request_cancel(self, grace: float) -> None:
        """Ask the task to stop; cancel it for real if it is still running after `grace` seconds."""
        self._cancel_event().set()
        asyncio.get_running_loop().call_later(grace, self._force)

    def _force(self) -> None:
        if self.runner is not None and not self.runner.done():
            self.forced = True
            self._interrupt()

    def expire(self) -> None:
        """The attempt's timeout passed: cancel it."""
        if self.runner is not None and not self.runner.done():
            self.timed_out = True
            self._interrupt()

    def _interrupt(self) -> None:
        assert self.runner is not None
        self.runner.cancel()
        if self._on_stuck is not None:
            asyncio.get_running_loop().call_later(self._stuck_after, self._check_stopped)

    def _check_stopped(self) -> None:
        if self.runner is not None and not self.runner.done() and self._on_stuck is not None:
            self._on_stuck(self)

    async def progress(self, percent: float, message: str = "", **extra: Any) -> None:
        """Report progress (0 to 100), a message and any JSON extra fields; cheap to call often."""
        if self.abandoned:
            return
        if not math.isfinite(percent):
            raise ConfigError(f"progress percent must be a finite number from 0 to 100, not {percent}")
        self._pending = Progress(percent=max(0.0, min(100.0, percent)), message=message, extra=extra)
        wait = self._last_write + PROGRESS_INTERVAL - time.monotonic()
        if wait <= 0:
            await self.flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later(wait))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Write the latest progress now, if any is pending. Progress is advisory: when the backend cannot take
        it (Redis restarting, say), a warning is logged, the next report tries again, and the job goes on."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.extra:
            pending = self._storable(pending)
        self._last_write = time.monotonic()
        self.job.progress = pending
        try:
            await self.backend.set_progress(self.job.queue, self.worker, self.job.id, pending)
        except Exception as exc:  # noqa: BLE001 - progress is advisory: the job goes on
            if self._pending is None:
                self._pending = pending
            _log.warning("job %s: could not store progress (%s); will try again with the next report", self.job.id,
                        exc)

    def _storable(self, progress: Progress) -> Progress:
        """`progress` less the extra fields JSON cannot store (every backend alike), warned about once."""
        try:
            dump_json(progress.extra, "progress extra")
            return progress
        except PayloadError:
            pass
        bad = []
        for key, value in progress.extra.items():
            try:
                dump_json(value, key)
            except PayloadError:
                bad.append(key)
        if not self._warned_extra:
            self._warned_extra = True
            _log.warning("job %s: progress extra field(s) %s cannot be stored as JSON (NaN, infinity, or not a JSON"
                         " type): dropped from this attempt's progress", self.job.id, ", ".join(bad))
        extra = {k: v for k, v in progress.extra.items() if k not in bad}
        return Progress(percent=progress.percent, message=progress.message, extra=extra)

    @property
    def unflushed(self) -> bool:
        """True while progress waits to be written or a delayed write is scheduled (`close` has work to do)."""
        return self._pending is not None or self._flusher is not None

    async def close(self) -> None:
        """Write the last progress and stop the background flusher (the attempt ended)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self.flush()
        self._pending = None  # a write that failed just now is given up: the outcome matters, not this

    async def save_checkpoint(self, state: Any) -> None:
        """Store JSON state that a later attempt of this job can read as `ctx.checkpoint` to resume."""
        if self.abandoned:
            return
        dump_json(state, f"checkpoint of job {self.job.id}")
        self.job.checkpoint = state
        await self.backend.set_checkpoint(self.job.queue, self.worker, self.job.id, state)
