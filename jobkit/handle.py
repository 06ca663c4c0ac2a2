"""`JobHandle`: a submitted job you can await, watch, cancel — and, in a notebook, see."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Generator
from typing import Any, Generic, TypeVar

from .backends import Backend
from .children import Children
from .config import mask_url
from .embedded import awaiting, ensure_worker
from .errors import BackendError, JobCancelled, JobFailed, JobNotFound, JobTimeout
from .models import FlowStatus, Job, JobEvent, JobState, Progress
from .task import Task

__all__ = ["JobHandle"]

R = TypeVar("R")
RECHECK_EVERY = 2.0  # seconds without an event of any job before a waiting handle re-reads its job
NO_WORKER_WARN_AFTER = 2.0  # seconds a handle waits on a server backend before it checks that a worker serves it
_deadline: Any = getattr(asyncio, "timeout", None)  # Python 3.11+: a deadline on the running task (else wait_for)

log = logging.getLogger("jobkit")
_warned_no_worker: set[tuple[str, str]] = set()  # (backend url, queue): said once until a worker shows up


class JobHandle(Generic[R]):
    """A job in a queue. `await handle` (or `await handle.result()`) gives its result."""

    def __init__(self, job: Job, backend: Backend, task: Task[R] | None = None) -> None:
        self.id = job.id
        self.queue = job.queue
        self.name = job.name
        self.backend = backend
        self.task = task
        self.last: Job = job  # the job as last seen
        self.child_handles: list[JobHandle[Any]] | None = None  # a flow's parent: its children, when known here

    def __repr__(self) -> str:
        return f"<JobHandle {self.name} id={self.id} queue={self.queue!r} state={self.last.state.value}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .notebook.display import handle_mimebundle  # widgets only when shown; the engine never needs them

        return handle_mimebundle(self, include, exclude)

    def _ipython_display_(self) -> None:
        from .notebook.display import display_handle

        display_handle(self)

    async def job(self) -> Job:
        """The job as it is now in the backend."""
        await self._reach()
        job = await self.backend.get(self.queue, self.id)
        if job is None:
            raise JobNotFound(f"job {self.id} is no longer in queue {self.queue!r} (removed by retention or clean)")
        self.last = job
        return job

    async def state(self) -> JobState:
        return (await self.job()).state

    async def children_progress(self) -> FlowStatus | None:
        """A flow's parent: its children counted so far (done, failed, cancelled, total) and its policy; None for a
        job that waits for nothing."""
        return (await self.job()).flow

    def children(self, *, state: JobState | str | list[JobState | str] | None = None) -> Children:
        """A flow's parent: its children and dependencies (see Context.children)."""
        return Children(self.backend, self.queue, self.id, state=state)

    async def _events(self) -> AsyncIterator[JobEvent]:
        return await self.backend.subscribe(self.queue)

    async def wait(self, timeout: float | None = None) -> Job:
        """Wait until the job is completed, failed or cancelled, and return it (raises only JobTimeout)."""
        job = await self._until_finished(timeout, full=True)
        assert isinstance(job, Job)
        return job

    async def _until_finished(self, timeout: float | None, *, full: bool) -> Job | tuple[Any]:
        try:
            if _deadline is None or timeout is None:
                return await asyncio.wait_for(self._wait_finished(full), timeout)
            async with _deadline(timeout):  # not wait_for's task of its own: fewer loop turns per wait
                return await self._wait_finished(full)
        except asyncio.TimeoutError:
            raise JobTimeout(
                f"job {self.id} ({self.name}) not finished after {timeout:g}s; it is still {self.last.state.value}"
                f" (is a worker running for queue {self.queue!r}?)"
            ) from None

    async def _wait_finished(self, full: bool) -> Job | tuple[Any]:
        """The finished job; or, unless `full`, (result,) when its "completed" event carries the result.

        On a local backend, an embedded worker runs the job while this waits (started if none serves the queue).
        """
        if self.last.finished:
            return await self._watch_finished(full)
        async with awaiting(self.backend, self.queue):
            return await self._watch_finished(full)

    async def _reach(self) -> None:
        """A spooled job's handle holds a Redis backend that may not have answered yet: connect it now (no-op when
        connected; BackendUnavailable while Redis is down). A local backend is left as its owner set it."""
        if not self.backend.is_local:
            await self.backend.open()

    async def _watch_finished(self, full: bool) -> Job | tuple[Any]:
        await self._reach()
        events, job = await self.backend.watch(self.queue, self.id, self.last)
        pending: asyncio.Future[JobEvent] | None = None
        check_workers_at = time.monotonic() + NO_WORKER_WARN_AFTER
        try:
            if job is None:
                raise JobNotFound(f"job {self.id} is no longer in queue {self.queue!r} (removed by retention or clean)")
            self.last = job
            direct = _deadline is not None and getattr(events, "cancel_safe", False)
            while not job.finished:
                if not direct and pending is None:  # created here, so that the finally below settles it if cancelled
                    pending = asyncio.ensure_future(events.__anext__())
                try:
                    ev, pending = await _next_event(events, pending, direct)
                except StopAsyncIteration:  # the backend closed
                    pending = None
                    return await self.job()
                if check_workers_at and time.monotonic() >= check_workers_at:
                    check_workers_at = 0.0
                    await self._check_served()
                if ev is None:
                    # Events can be lost (a Redis restart empties the stream): look at the job itself now and then.
                    job = await self.job()
                    if self.backend.is_local and not job.finished:
                        await ensure_worker(self.backend, self.queue)  # in case ours stopped (it crashed, say)
                    continue
                if ev.job_id == self.id and ev.state.finished:
                    carried = ev.carried_result
                    if not full and carried is not None and ev.state is JobState.COMPLETED:
                        self.last = job.model_copy(update={"state": JobState.COMPLETED, "result": carried[0],
                                                           "finished_at": ev.at, "worker": None})
                        return carried
                    job = await self.job()
            return job
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)  # let the iterator settle before closing
            await events.aclose()  # type: ignore[attr-defined]

    async def _check_served(self) -> None:
        """On a server backend, warn once when no worker serves this queue: the job would wait forever."""
        if self.backend.is_local:
            return
        key = (self.backend.url, self.queue)
        try:
            serving = await self.backend.workers(time.time(), self.queue)
        except BackendError:  # unreachable for now: the wait goes on, and so does its own re-check
            return
        if serving:
            _warned_no_worker.discard(key)
            return
        if key in _warned_no_worker:
            return
        _warned_no_worker.add(key)
        module = self.task.fn.__module__ if self.task is not None else "__main__"
        hint = "" if module != "__main__" else " (MODULE: the importable module that defines the task)"
        url = mask_url(self.backend.url)
        log.warning("no worker is running for queue %r on %s: job %s (%s) waits until one starts. Start one with "
                    "`jobkit worker %s --url %s --queue %s`%s; still waiting", self.queue, url, self.id, self.name,
                    "MODULE" if hint else module, url, self.queue, hint)

    async def result(self, timeout: float | None = None) -> R:
        """The job's result, as the task's return type; JobFailed or JobCancelled if it did not complete."""
        job = await self._until_finished(timeout, full=False)
        if isinstance(job, tuple):
            value = job[0]
        elif job.state is JobState.FAILED:
            raise JobFailed(job)
        elif job.state is JobState.CANCELLED:
            raise JobCancelled(job)
        else:
            value = job.result
        return self.task.load_result(value) if self.task is not None else value

    def __await__(self) -> Generator[Any, None, R]:
        return self.result().__await__()

    async def cancel(self) -> Job:
        """Cancel the job: at once if it has not started, cooperatively if it is running."""
        job = await self.backend.cancel(self.queue, self.id, time.time())
        if job is None:
            raise JobNotFound(f"job {self.id} is no longer in queue {self.queue!r}")
        self.last = job
        return job

    async def progress(self) -> AsyncIterator[Progress]:
        """Each progress update of the job as it runs, until it finishes."""
        events = await self._events()
        try:
            job = await self.job()
            yield job.progress
            if job.finished:
                return
            # Events published between the subscription and that read come after it, though they are older: skip the
            # progress of the same attempt below (or equal to) what was read, until the first event that is not one.
            catching_up = True
            async for ev in events:
                if ev.job_id != self.id:
                    continue
                if catching_up and ev.event == "progress" and ev.attempt == job.attempts and ev.progress is not None \
                        and (ev.progress.percent < job.progress.percent or ev.progress == job.progress):
                    continue
                catching_up = False
                if ev.progress is not None:
                    yield ev.progress
                if ev.state.finished:
                    job = await self.job()
                    yield job.progress
                    return
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def updates(self) -> AsyncIterator[Job]:
        """The job after each of its events, until it finishes (for views that show more than progress)."""
        events = await self._events()
        try:
            job = await self.job()
            yield job
            if job.finished:
                return
            async for ev in events:
                if ev.job_id != self.id:
                    continue
                if ev.event == "progress" and ev.progress is not None:
                    self.last = self.last.model_copy(update={"progress": ev.progress})
                    yield self.last
                    continue
                job = await self.job()
                yield job
                if job.finished:
                    return
        finally:
            await events.aclose()  # type: ignore[attr-defined]


async def _next_event(events: AsyncIterator[JobEvent], pending: asyncio.Future[JobEvent] | None, direct: bool
                      ) -> tuple[JobEvent | None, asyncio.Future[JobEvent] | None]:
    """The next event within RECHECK_EVERY (None: none came), and the read still under way. `direct`: awaited in
    this task, which costs one loop turn when the event comes (the iterator loses nothing when cancelled); else read
    by `pending`, a task of its own kept across calls."""
    if direct:
        try:
            async with _deadline(RECHECK_EVERY):
                return await events.__anext__(), None
        except asyncio.TimeoutError:
            return None, None
    assert pending is not None
    done, _ = await asyncio.wait((pending,), timeout=RECHECK_EVERY)
    return (pending.result(), None) if done else (None, pending)
