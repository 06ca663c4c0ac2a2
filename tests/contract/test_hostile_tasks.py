"""Tasks that misbehave never take their worker down or wedge a slot, on every backend."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState


@jobkit.task(name="h.ok")
async def ok(ctx: jobkit.Context, n: int) -> int:
    return n


@jobkit.task(name="h.exits", attempts=2, backoff=0.0)
async def exits(ctx: jobkit.Context, how: str) -> None:
    if how == "sys.exit":
        sys.exit(3)
    if how == "argparse":
        argparse.ArgumentParser(prog="h.exits", add_help=False).parse_args(["--no-such-flag"])
    raise KeyboardInterrupt


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


@jobkit.task(name="h.unprintable", attempts=2, backoff=0.0)
async def unprintable(ctx: jobkit.Context) -> None:
    raise UnprintableError()


release: dict[str, asyncio.Event] = {}  # lets a task that ignores cancellation end when its test does


@jobkit.task(name="h.swallows", attempts=2, timeout=0.2, backoff=0.0)
async def swallows(ctx: jobkit.Context) -> str:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)
    return "finished anyway"


@jobkit.task(name="h.blocks", timeout=0.2)
async def blocks(ctx: jobkit.Context, seconds: float) -> str:
    time.sleep(seconds)  # holds the event loop: nothing can interrupt it
    return "finished anyway"


async def _ignore_cancellation(key: str) -> str:
    while not release[key].is_set():
        try:
            await release[key].wait()
        except asyncio.CancelledError:
            continue
    return "released"


@jobkit.task(name="h.never_stops", timeout=0.2)
async def never_stops(ctx: jobkit.Context, key: str) -> str:
    return await _ignore_cancellation(key)


@jobkit.task(name="h.deaf")
async def deaf(ctx: jobkit.Context, key: str) -> str:
    await ctx.progress(1, "started")
    return await _ignore_cancellation(key)


@jobkit.task(name="h.backs_off", attempts=2, backoff=2.5)
async def backs_off(ctx: jobkit.Context) -> None:
    if ctx.attempt == 1:
        raise ConnectionResetError("peer went away")


@jobkit.task(name="h.nan_unannotated")
async def nan_unannotated(ctx):  # type: ignore[no-untyped-def]  # no return annotation on purpose
    return float("nan")


@jobkit.task(name="h.nested_inf")
async def nested_inf(ctx: jobkit.Context) -> dict:  # type: ignore[type-arg]
    return {"scores": [1.0, float("-inf")]}


@jobkit.task(name="h.bad_extras")
async def bad_extras(ctx: jobkit.Context) -> str:
    await ctx.progress(10, "first", handle=object(), rate=float("nan"), rows=1)
    await ctx.progress(50, "half", handle=object(), rows=2)
    await ctx.flush()
    return "done"


FILENAME = b"caf\xe9.csv".decode("utf-8", "surrogateescape")  # a Latin-1 file name, as os.listdir gives it


@jobkit.task(name="h.surrogates")
async def surrogates(ctx: jobkit.Context, how: str) -> Any:
    if how == "error":
        raise FileNotFoundError(f"no such file: {FILENAME}")
    return FILENAME if how == "str" else {"files": [FILENAME]}


HOSTILE = [ok, exits, unprintable, swallows, blocks, never_stops, deaf, backs_off, nan_unannotated, nested_inf,
           bad_extras, surrogates]


@pytest.fixture
async def worker(backend: Backend, qname: str) -> AsyncIterator[jobkit.Worker]:
    w = jobkit.Worker(HOSTILE, backend=backend, queues=[qname], concurrency=2, lease=5, renew_every=0.05,
                      cancel_grace=0.3, grace=2, handle_signals=False)
    async with w:
        yield w


@pytest.mark.parametrize(("how", "error"), [
    ("sys.exit", "SystemExit: 3"), ("argparse", "SystemExit: 2"), ("KeyboardInterrupt", "KeyboardInterrupt"),
])
async def test_system_exit_and_keyboard_interrupt_fail_the_attempt(
    worker: jobkit.Worker, submit: Callable[..., Any], how: str, error: str
) -> None:
    """Each attempt counts and fails like any exception, the error and traceback are kept, the worker goes on."""
    h = await submit(exits, how)
    with pytest.raises(jobkit.JobFailed) as info:
        await h.result(timeout=10)
    job = info.value.job
    assert job.attempts == 2 and job.error == error
    assert job.traceback is not None and "in exits" in job.traceback
    assert [e.note for e in job.history if e.state is JobState.WAITING and e.note != "added"] == [error]
    assert not worker.stopping and worker.active == 0
    assert await (await submit(ok, 7)).result(timeout=10) == 7


async def test_exception_whose_str_fails_still_ends_the_attempt(
    worker: jobkit.Worker, submit: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The error falls back to the exception's type name; the attempt is counted and logged, the slot freed."""
    caplog.set_level(logging.WARNING, "jobkit.worker")
    h = await submit(unprintable)
    with pytest.raises(jobkit.JobFailed) as info:
        await h.result(timeout=10)
    job = info.value.job
    assert job.attempts == 2 and job.error is not None and job.error.startswith("UnprintableError")
    assert job.traceback is not None and "raise UnprintableError()" in job.traceback
    assert worker.active == 0
    logged = [r.getMessage() for r in caplog.records if h.id in r.getMessage()]
    assert any("attempt 2 failed" in m and "UnprintableError" in m for m in logged), logged
    assert await (await submit(ok, 8)).result(timeout=10) == 8


@pytest.mark.parametrize(("module", "name", "error"), [
    ("jobkit.attempt", "failed", "UnprintableError"), ("jobkit.worker", "run_attempt", "LookupError"),
])
async def test_an_outcome_that_cannot_be_built_still_ends_the_attempt(
    worker: jobkit.Worker, submit: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, module: str, name: str, error: str,
) -> None:
    """The last resorts: if deciding the outcome fails (a bug in the policy, or anywhere in the attempt), the
    attempt still ends FAILED with the error's type name, the failure is logged with its traceback, and the
    slot is free again."""
    import importlib

    where = importlib.import_module(module)
    original = getattr(where, name)

    def broken(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, jobkit.Job) and a.name == unprintable.name for a in args):
            raise LookupError("outcome policy broke")
        return original(*args, **kwargs)

    monkeypatch.setattr(where, name, broken)
    caplog.set_level(logging.ERROR, "jobkit.worker")
    h = await submit(unprintable)
    done = await asyncio.wait_for(h.wait(), 10)
    assert done.state is JobState.FAILED and done.attempts == 1
    assert done.error is not None and done.error.startswith(error) and "could not be recorded" in done.error
    assert "LookupError: outcome policy broke" in (done.traceback or "")
    assert worker.active == 0
    assert any(h.id in r.getMessage() and r.exc_info for r in caplog.records)
    assert await (await submit(ok, 9)).result(timeout=10) == 9


async def test_a_task_that_swallows_its_timeout_is_timed_out(worker: jobkit.Worker, submit: Callable[..., Any]) -> None:
    """Catching the CancelledError of its timeout and returning does not make the attempt a success."""
    h = await submit(swallows)
    with pytest.raises(jobkit.JobFailed, match="timed out after 0.2s") as info:
        await h.result(timeout=10)
    job = info.value.job
    assert job.attempts == 2 and job.result is None
    assert [e.note for e in job.history if e.state is JobState.WAITING and e.note != "added"] == [
        "TimeoutError: attempt 1 timed out after 0.2s"]


async def test_a_task_that_blocks_past_its_timeout_is_timed_out(
    worker: jobkit.Worker, submit: Callable[..., Any]
) -> None:
    """Blocking code cannot be interrupted in-process, but an attempt that ends after its timeout failed."""
    h = await submit(blocks, 0.5)
    with pytest.raises(jobkit.JobFailed, match="attempt 1 timed out after 0.2s"):
        await h.result(timeout=10)


async def test_a_task_that_ignores_its_timeout_loses_its_slot(
    worker: jobkit.Worker, submit: Callable[..., Any], qname: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task that goes on after its timeout's cancel: cancel_grace later its attempt is recorded as timed out
    and its slot is free, while the task itself runs on, ignored (its late result is dropped)."""
    caplog.set_level(logging.ERROR, "jobkit.worker")
    release[qname] = asyncio.Event()
    try:
        h = await submit(never_stops, qname)
        with pytest.raises(jobkit.JobFailed, match="attempt 1 timed out after 0.2s"):
            await h.result(timeout=10)
        assert worker.active == 0
        assert any(h.id in r.getMessage() and "ignored its cancellation" in r.getMessage() for r in caplog.records)
        assert await (await submit(ok, 5)).result(timeout=10) == 5
    finally:
        release[qname].set()
    assert (await h.job()).state is JobState.FAILED


async def test_a_task_that_ignores_a_forced_cancel_loses_its_slot(
    worker: jobkit.Worker, submit: Callable[..., Any], backend: Backend, qname: str, watch: Any
) -> None:
    """Cancelled, then cancelled for real after cancel_grace, the task goes on: its job ends CANCELLED and its
    slot is free once more cancel_grace has passed."""
    release[qname] = asyncio.Event()
    try:
        async with watch(backend, qname) as w:
            h = await submit(deaf, qname)
            await w.until(lambda e: e.job_id == h.id and e.event == "progress")
            await h.cancel()
        done = await h.wait(timeout=10)
        assert done.state is JobState.CANCELLED and done.error == "cancelled while running"
        assert worker.active == 0
    finally:
        release[qname].set()


async def test_the_log_says_why_an_attempt_failed_and_when_it_runs_again(
    worker: jobkit.Worker, submit: Callable[..., Any], backend: Backend, qname: str, watch: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The retry delay logged is the backoff's, not how long the attempt took."""
    caplog.set_level(logging.WARNING, "jobkit.worker")
    async with watch(backend, qname) as w:
        h = await submit(backs_off)
        await w.until(lambda e: e.job_id == h.id and e.event == "retrying")
    [line] = [r.getMessage() for r in caplog.records if h.id in r.getMessage()]
    assert "attempt 1 failed after" in line and "ConnectionResetError: peer went away" in line
    assert line.endswith("will retry in 2.5s (attempt 2 of 2)"), line


@pytest.mark.parametrize("task", [nan_unannotated, nested_inf], ids=lambda t: t.name)
async def test_a_non_finite_result_fails_clearly(
    worker: jobkit.Worker, submit: Callable[..., Any], task: jobkit.Task[Any]
) -> None:
    """NaN and infinity are not JSON: the job fails saying so, with or without a return annotation (a result
    without one used to become null silently)."""
    with pytest.raises(jobkit.JobFailed, match="not JSON-serialisable.*Out of range float") as info:
        await (await submit(task)).result(timeout=10)
    assert info.value.job.result is None and info.value.job.attempts == 1


async def test_progress_extras_that_are_not_json_are_dropped_with_one_warning(
    worker: jobkit.Worker, submit: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Progress is advisory on every backend: extra fields that JSON cannot store are dropped, once warned
    about, and the job goes on (it failed on SQLite and Redis, and not on memory)."""
    caplog.set_level(logging.WARNING, "jobkit.worker")
    h = await submit(bad_extras)
    assert await h.result(timeout=10) == "done"
    job = await h.job()
    assert job.progress.percent == 50 and job.progress.message == "half" and job.progress.extra == {"rows": 2}
    warned = [r.getMessage() for r in caplog.records if h.id in r.getMessage()]
    assert len(warned) == 1 and "handle" in warned[0] and "rate" in warned[0], warned


@pytest.mark.parametrize("how", ["str", "dict"])
async def test_a_result_that_is_not_text_json_can_store_fails_clearly(
    worker: jobkit.Worker, submit: Callable[..., Any], how: str
) -> None:
    """A lone surrogate (a file name decoded with surrogateescape) cannot be stored as UTF-8 JSON: the job fails
    saying so, instead of its outcome (and those written with it) being lost to a failed write."""
    h, other = await submit(surrogates, how), await submit(ok, 4)
    with pytest.raises(jobkit.JobFailed, match="not JSON-serialisable.*surrogate"):
        await h.result(timeout=10)
    assert await other.result(timeout=10) == 4


async def test_an_error_message_with_a_lone_surrogate_is_kept_escaped(
    worker: jobkit.Worker, submit: Callable[..., Any]
) -> None:
    h = await submit(surrogates, "error")
    with pytest.raises(jobkit.JobFailed) as info:
        await h.result(timeout=10)
    job = info.value.job
    assert job.error == "FileNotFoundError: no such file: caf\\udce9.csv" and job.attempts == 1
    assert job.traceback is not None and "caf\\udce9.csv" in job.traceback


async def test_a_payload_with_a_lone_surrogate_is_refused_at_enqueue(backend: Backend, qname: str) -> None:
    """Refused alike on every backend, before anything is queued (SQLite raised a raw pydantic error)."""
    q = jobkit.Queue(qname, backend=backend)
    with pytest.raises(jobkit.PayloadError, match="not JSON-serialisable.*surrogate"):
        await q.add(surrogates, FILENAME)
    with pytest.raises(jobkit.PayloadError, match="not JSON-serialisable.*surrogate"):
        await q.add("h.unregistered", {"file": FILENAME})
    assert (await q.counts()).total == 0
