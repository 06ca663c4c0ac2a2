"""NaN and infinity are refused where they enter (delays, timeouts, backoffs, retention, progress), on every
backend: JSON cannot store them, and a stored one would break the job's readers and workers."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobOptions, Progress

NON_FINITE = [math.inf, -math.inf, math.nan]


@jobkit.task(name="nf.ok")
async def ok(ctx: jobkit.Context, n: int) -> int:
    return n


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("option", ["delay", "timeout"])
async def test_queue_refuses_non_finite_delay_and_timeout(backend: Backend, qname: str, option: str,
                                                         value: float) -> None:
    q = jobkit.Queue(qname, backend=backend)
    with pytest.raises(jobkit.ConfigError, match=f"{option}.*finite"):
        await q.add(ok, 1, **{option: value})
    with pytest.raises(jobkit.ConfigError, match=f"{option}.*finite"):
        await q.add_bulk(ok, [1, 2], **{option: value})
    with pytest.raises(jobkit.ConfigError, match=f"{option}.*finite"):
        await jobkit.submit(ok, 1, backend=backend, **{option: value})
    assert (await q.counts()).total == 0, "nothing was queued"


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_backoff_refuses_non_finite_numbers(value: float) -> None:
    makers: list[Callable[[], Any]] = [
        lambda: jobkit.Backoff.fixed(value),
        lambda: jobkit.Backoff.exponential(value),
        lambda: jobkit.Backoff.exponential(1.0, factor=value),
        lambda: jobkit.Backoff.exponential(1.0, max_delay=value),
    ]
    for make in makers:
        with pytest.raises(jobkit.ConfigError, match="finite"):
            make()
    with pytest.raises(jobkit.ConfigError, match="finite"):
        jobkit.task(name="nf.bad_backoff", backoff=value)
    with pytest.raises(jobkit.ConfigError, match="finite"):
        jobkit.task(name="nf.bad_timeout", timeout=value)


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_models_refuse_non_finite_numbers(value: float) -> None:
    """Built directly, the models refuse them too (a pydantic ValidationError, as for any invalid field)."""
    for make in (lambda: jobkit.Backoff(delay=value), lambda: JobOptions(timeout=value),
                 lambda: jobkit.Retention(age=value), lambda: jobkit.RateLimit(10, per=value),
                 lambda: Progress(percent=value)):
        with pytest.raises(ValidationError, match="finite"):
            make()


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_worker_refuses_non_finite_seconds(value: float) -> None:
    for option in ("lease", "grace", "cancel_grace", "heartbeat", "renew_every", "maintenance_every",
                   "idle_timeout"):
        with pytest.raises(jobkit.ConfigError, match=f"{option}.*finite"):
            jobkit.Worker([ok], **{option: value})  # type: ignore[arg-type]


@jobkit.task(name="nf.reports")
async def reports(ctx: jobkit.Context, percent: str) -> str:
    try:
        await ctx.progress(float(percent), "halfway")
    except jobkit.ConfigError as exc:
        return str(exc)
    return "accepted"


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
async def test_progress_refuses_a_non_finite_percent(backend: Backend, qname: str, value: float,
                                                     run_job: Callable[..., Awaitable[Any]]) -> None:
    """NaN used to show as 100 %: the call is refused before anything is stored, on every backend."""
    said, job = await run_job(reports, str(value))
    assert "percent" in said and "finite" in said
    assert job.progress.percent == 0.0


@pytest.fixture
def run_job(backend: Backend, qname: str) -> Callable[..., Awaitable[Any]]:
    async def go(task: jobkit.Task[Any], payload: Any) -> tuple[Any, jobkit.Job]:
        async with jobkit.Worker([task], backend=backend, queues=[qname], handle_signals=False):
            job = await jobkit.Queue(qname, backend=backend).add(task, payload)
            handle = jobkit.JobHandle(job, backend, task)
            result = await handle.result(timeout=10)
            return result, await handle.job()

    return go
