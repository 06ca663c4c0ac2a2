"""Tasks that misbehave never take their worker down or wedge a slot, on every backend."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
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


HOSTILE = [ok, exits, unprintable]


@pytest.fixture
async def worker(backend: Backend, qname: str) -> AsyncIterator[jobkit.Worker]:
    w = jobkit.Worker(HOSTILE, backend=backend, queues=[qname], concurrency=2, lease=5, renew_every=0.05,
                      cancel_grace=0.3, grace=2, handle_signals=False)
    async with w:
        yield w


@pytest.fixture
def submit(backend: Backend, qname: str) -> Callable[..., Any]:
    async def go(task: jobkit.Task[Any], payload: Any = None, **kw: Any) -> jobkit.JobHandle[Any]:
        job = await jobkit.Queue(qname, backend=backend).add(task, payload, **kw)
        return jobkit.JobHandle(job, backend, task)

    return go


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
