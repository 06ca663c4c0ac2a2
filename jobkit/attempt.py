"""One attempt of one job: run the task with its timeout and cancellation, then decide the outcome.

This is where retry policy lives (once, above every backend): which errors retry, the backoff delay,
and how long a finished job is kept.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any

from pydantic import ValidationError

from .context import Context
from .errors import PayloadError, TaskNotFound, Unrecoverable
from .models import Job, JobState, Outcome, Retention
from .task import Task

__all__ = ["run_attempt"]

_NOT_RETRIED = (Unrecoverable, PayloadError, TaskNotFound)


def _expiry(retention: Retention, now: float) -> float | None:
    return None if retention.age is None else now + retention.age


def completed(job: Job, result: Any) -> Outcome:
    now = time.time()
    return Outcome(job_id=job.id, state=JobState.COMPLETED, result=result, expires_at=_expiry(job.options.keep_completed, now))


def cancelled(job: Job, why: str) -> Outcome:
    now = time.time()
    return Outcome(job_id=job.id, state=JobState.CANCELLED, error=why, expires_at=_expiry(job.options.keep_failed, now))


def failed(job: Job, exc: BaseException, tb: str | None = None) -> Outcome:
    """A retry at the backoff delay while attempts remain and the error allows it, else FAILED."""
    now = time.time()
    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if not isinstance(exc, _NOT_RETRIED) and job.attempts < job.options.attempts:
        delay = job.options.backoff.seconds(job.attempts)
        state = JobState.DELAYED if delay > 0 else JobState.WAITING
        return Outcome(job_id=job.id, state=state, error=error, traceback=tb, run_at=now + delay)
    if isinstance(exc, Unrecoverable) and job.attempts < job.options.attempts:
        error += f" (unrecoverable: {job.options.attempts - job.attempts} retries skipped)"
    return Outcome(job_id=job.id, state=JobState.FAILED, error=error, traceback=tb, expires_at=_expiry(job.options.keep_failed, now))


async def run_attempt(task: Task[Any] | None, job: Job, ctx: Context, cancel_grace: float) -> Outcome:
    """Run one attempt to its outcome; never raises except CancelledError from the worker itself."""
    if task is None:
        return failed(job, TaskNotFound(
            f"this worker has no task named {job.name!r}: pass it to Worker([...]) or import its module in the worker"
        ))
    try:
        args = (task.load_payload(job.data),) if task.takes_payload else ()
    except ValidationError as exc:
        return failed(job, PayloadError(f"stored payload no longer matches task {task.name!r}: {exc}"))
    timeout = job.options.timeout
    body = asyncio.ensure_future(asyncio.wait_for(task.fn(ctx, *args), timeout) if timeout else task.fn(ctx, *args))
    watch = asyncio.ensure_future(ctx.wait_cancelled())
    try:
        await asyncio.wait((body, watch), return_when=asyncio.FIRST_COMPLETED)
        if not body.done():  # cancel requested: give the task its grace period to stop by itself
            await asyncio.wait((body,), timeout=cancel_grace)
            if not body.done():
                body.cancel()
                await asyncio.wait((body,))
    except asyncio.CancelledError:
        body.cancel()
        raise
    finally:
        watch.cancel()
        await ctx.close()
    if ctx.cancelled:
        return cancelled(job, "cancelled while running")
    exc = body.exception() if not body.cancelled() else asyncio.CancelledError()
    if exc is None:
        try:
            return completed(job, task.dump_result(body.result()))
        except PayloadError as bad:
            return failed(job, bad)
    if isinstance(exc, asyncio.TimeoutError) and timeout:
        return failed(job, TimeoutError(f"attempt {job.attempts} timed out after {timeout:g}s"), tb=_tb(exc))
    return failed(job, exc)


def _tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
