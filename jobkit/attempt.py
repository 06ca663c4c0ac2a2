"""One attempt of one job: run the task with its timeout and cancellation, then decide the outcome.

This is where retry policy lives (once, above every backend): which errors retry, the backoff delay,
and how long a finished job is kept. Whatever the task does (raise SystemExit, swallow a cancel, return
after its timeout), its attempt ends here with an outcome; only the worker's own cancellation escapes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import Any

from pydantic import ValidationError

from .context import Context
from .errors import PayloadError, TaskNotFound, Unrecoverable
from .models import Job, JobState, Outcome, Retention, trusted
from .task import Task

__all__ = ["describe", "interrupted", "run_attempt", "unrecorded"]

log = logging.getLogger("jobkit.worker")

_NOT_RETRIED = (Unrecoverable, PayloadError, TaskNotFound)


def _expiry(retention: Retention, now: float) -> float | None:
    return None if retention.age is None else now + retention.age


def describe(exc: BaseException) -> str:
    """`Type: message`, or the type's name alone when the message is empty or cannot be read."""
    name = type(exc).__name__
    try:
        text = _storable(str(exc))
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure itself
        return f"{name} (its message could not be read: str() raised)"
    return f"{name}: {text}" if text else name


def _storable(text: str) -> str:
    """`text` as UTF-8 can store it: a lone surrogate (a file name decoded with surrogateescape) as `\\udce9`."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def completed(job: Job, result: Any) -> Outcome:
    expires = _expiry(job.options.keep_completed, time.time())
    # Every job that succeeds passes here, and these values need no validation.
    return trusted(Outcome, {"job_id": job.id, "state": JobState.COMPLETED, "result": result, "error": None,
                             "traceback": None, "run_at": 0.0, "expires_at": expires})


def cancelled(job: Job, why: str) -> Outcome:
    now = time.time()
    return Outcome(job_id=job.id, state=JobState.CANCELLED, error=why, expires_at=_expiry(job.options.keep_failed, now))


def failed(job: Job, exc: BaseException, tb: str | None = None) -> Outcome:
    """A retry at the backoff delay while attempts remain and the error allows it, else FAILED."""
    now = time.time()
    error = describe(exc)
    if tb is None:
        tb = _tb(exc)
    if not isinstance(exc, _NOT_RETRIED) and job.attempts < job.options.attempts:
        delay = job.options.backoff.seconds(job.attempts)
        state = JobState.DELAYED if delay > 0 else JobState.WAITING
        return Outcome(job_id=job.id, state=state, error=error, traceback=tb, run_at=now + delay)
    if isinstance(exc, Unrecoverable) and job.attempts < job.options.attempts:
        error += f" (unrecoverable: {job.options.attempts - job.attempts} retries skipped)"
    expires = _expiry(job.options.keep_failed, now)
    return Outcome(job_id=job.id, state=JobState.FAILED, error=error, traceback=tb, expires_at=expires)


def interrupted(job: Job, ctx: Context, exc: BaseException | None = None) -> Outcome:
    """An attempt the worker interrupted: past its timeout (a failure, retried per policy), else cancelled."""
    if ctx.timed_out:
        timeout = job.options.timeout or 0.0
        return failed(job, TimeoutError(f"attempt {job.attempts} timed out after {timeout:g}s"),
                      tb=None if exc is None else _tb(exc))
    return cancelled(job, "cancelled while running")


def unrecorded(job: Job, exc: BaseException, broke: BaseException) -> Outcome:
    """FAILED with the error's type name: the last resort when deciding an attempt's outcome itself failed."""
    return Outcome(job_id=job.id, state=JobState.FAILED, error=f"{type(exc).__name__} (its outcome could not be"
                   f" recorded: {type(broke).__name__})", traceback=_tb(broke),
                   expires_at=_expiry(job.options.keep_failed, time.time()))


def _failure(job: Job, exc: BaseException) -> Outcome:
    try:
        return failed(job, exc)
    except Exception as broke:  # the attempt must end whatever the exception is like
        log.exception("job %s (%s) attempt %d: could not record its failure (%s); failing it with the error's type"
                      " name", job.id, job.name, job.attempts, type(exc).__name__)
        return unrecorded(job, exc, broke)


async def run_attempt(task: Task[Any] | None, job: Job, ctx: Context) -> Outcome:
    """Run one attempt to its outcome, in the calling asyncio task.

    The per-attempt timeout and a forced cancel (after the cancel grace) both cancel this task and
    flag why on the context; any other cancellation (worker shutdown, lease lost) propagates. An attempt
    that ends after its timeout (it swallowed the cancel, or blocked the loop past it) is a timeout too.
    """
    if task is None:
        return failed(job, TaskNotFound(
            f"this worker has no task named {job.name!r}: pass it to Worker([...]) or import its module in the worker"
        ))
    try:
        args = (task.load_payload(job.data),) if task.takes_payload else ()
    except ValidationError as exc:
        return failed(job, PayloadError(f"stored payload no longer matches task {task.name!r}: {exc}"))
    timeout = job.options.timeout
    timer = asyncio.get_running_loop().call_later(timeout, ctx.expire) if timeout else None
    try:
        result = await task.fn(ctx, *args)
    except asyncio.CancelledError as exc:
        if not (ctx.timed_out or ctx.forced):
            raise
        _uncancel()
        return interrupted(job, ctx, exc)
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too: a task ends only its attempt
        if ctx.timed_out or ctx.cancelled:
            return interrupted(job, ctx, exc)
        return _failure(job, exc)
    finally:
        if timer is not None:
            timer.cancel()
        if ctx.unflushed:
            await ctx.close()
    if timer is not None and (ctx.timed_out or timer.when() <= asyncio.get_running_loop().time()):
        ctx.timed_out = True  # it returned after its timeout: swallowed the cancel, or blocked the loop past it
        return interrupted(job, ctx)
    if ctx.cancelled:
        return cancelled(job, "cancelled while running")
    if result is None:  # stored as it is, whatever the return type: spare the JSON round trip
        return completed(job, None)
    try:
        return completed(job, task.dump_result(result))
    except PayloadError as bad:
        return failed(job, bad)


def _uncancel() -> None:
    current = asyncio.current_task()
    if current is not None and hasattr(current, "uncancel"):  # Python 3.11+
        current.uncancel()


def _tb(exc: BaseException) -> str:
    try:
        return _storable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except Exception:  # noqa: BLE001 - a traceback that cannot be formatted must not lose the failure
        return f"{type(exc).__name__} (its traceback could not be formatted)"
