"""JobView: what it shows after a sequence of updates, how often it renders, and its Cancel button."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import jobkit
from jobkit.backends import Backend
from jobkit.models import Job, JobOptions, JobState, Progress
from jobkit.notebook.job_view import JobView

from .conftest import hold, steps


def view_of(backend: Backend, interval: float = 0.0) -> tuple[JobView, Job]:
    job = Job(id="job-1", name="excel_import", queue="nb", options=JobOptions(attempts=3))
    return JobView(jobkit.JobHandle(job, backend), interval=interval), job


async def test_state_after_a_sequence_of_updates(memory: Backend) -> None:
    view, job = view_of(memory)
    assert (view.bar.value, view.percent.value) == (0.0, "0%")
    assert "waiting" in view.state.value and view.timing.value.endswith("></span>")

    now = time.time()
    running = job.model_copy(update={"state": JobState.ACTIVE, "attempts": 1, "started_at": now - 4,
                                     "progress": Progress(percent=40, message="rows 400/1000")})
    view.update(running)
    assert (view.bar.value, view.percent.value, view.message.value) == (40.0, "40%", "rows 400/1000")
    assert view.bar.bar_style == "info" and "active" in view.state.value
    assert "attempt 1 of 3" in view.timing.value and "ETA 6.0s" in view.timing.value
    assert view.cancel_button.layout.display is None

    failed = running.model_copy(update={"state": JobState.FAILED, "finished_at": now,
                                        "error": "Traceback (most recent call last):\nValueError: bad <row>"})
    view.update(failed)
    assert view.bar.bar_style == "danger" and "failed" in view.state.value
    assert "ValueError: bad &lt;row&gt;" in view.error.value
    assert "took 4.0s" in view.timing.value and "ETA" not in view.timing.value
    assert view.cancel_button.layout.display == "none"
    assert view._repr_mimebundle_()["text/plain"].startswith("excel_import job-1 [")


async def test_a_thousand_updates_render_a_few_times_and_show_the_last(memory: Backend) -> None:
    view, job = view_of(memory, interval=0.1)
    before = view.renders
    for i in range(1, 1001):
        view.update(job.model_copy(update={"state": JobState.ACTIVE, "progress": Progress(percent=i / 10)}))
    assert view.renders - before == 1
    view.flush()
    assert view.renders - before == 2 and view.bar.value == 100.0


async def test_a_live_job_reporting_20000_times_is_throttled(memory: Backend) -> None:
    handle = await jobkit.submit(steps, 20_000, backend=memory)
    started = time.monotonic()
    view = JobView(handle).start()
    job = await view.wait(timeout=30)
    took = time.monotonic() - started
    assert job.state is JobState.COMPLETED and view.bar.value == 100.0 and view.bar.bar_style == "success"
    assert view.renders <= 10 * took + 3, (view.renders, took)
    assert view.message.value == "step 20000/20000"


async def test_cancel_button_cancels_the_running_job(memory: Backend, watch: Callable[..., Any]) -> None:
    async with watch(memory, "nb") as w:
        handle = await jobkit.submit(hold, backend=memory)
        view = JobView(handle).start()
        await w.until(lambda e: e.job_id == handle.id and e.event == "progress")
        view.cancel_button.click()
        assert view.cancel_button.disabled
        job = await view.wait(timeout=15)
    assert job.state is JobState.CANCELLED and "cancelled" in view.state.value
    stored = await memory.get("nb", handle.id)
    assert stored is not None and stored.state is JobState.CANCELLED


async def test_close_stops_following(memory: Backend) -> None:
    handle = await jobkit.submit(hold, backend=memory)
    view = JobView(handle).start()
    view.close()
    await view.wait(timeout=5)
    assert not view.watching and "closed" in view.problem
    await handle.cancel()


async def test_a_closed_backend_ends_the_view_and_says_so(memory: Backend) -> None:
    view, _ = view_of(memory)
    await memory.add([view.job])
    following = asyncio.Event()
    shown = view.update

    def update(job: Job) -> None:
        shown(job)
        following.set()

    view.update = update  # type: ignore[method-assign]
    view.start()
    await asyncio.wait_for(following.wait(), 5)  # subscribed and read the job
    await memory.close()
    job = await view.wait(timeout=5)
    assert job.state is JobState.WAITING and not view.watching
    assert "backend was closed" in view.error.value


async def test_start_after_a_cancel_click_still_follows_the_job(memory: Backend) -> None:
    view, job = view_of(memory)
    await memory.add([job])
    view.cancel_button.click()  # cancels the waiting job before anyone follows it
    view.start()
    assert (await view.wait(timeout=5)).state is JobState.CANCELLED


async def test_progress_extras_show_and_a_limited_one_gets_a_bar(memory: Backend) -> None:
    """An AI batch reports cost and cost_limit: the view shows the spending against the limit, live."""
    view, job = view_of(memory)
    extra = {"items_done": 1200, "items_total": 5000, "tokens_in": 48211, "cost": 0.5, "cost_limit": 50.0,
             "eta_s": None}
    view.update(job.model_copy(update={"state": JobState.ACTIVE, "progress": Progress(percent=24, extra=extra)}))
    assert "items done <b>1,200</b>" in view.extras.line.value and "tokens in <b>48,211</b>" in view.extras.line.value
    assert "cost" not in view.extras.line.value and "eta" not in view.extras.line.value
    bar, label = view.extras.meters["cost"]
    assert (bar.value, bar.max, bar.bar_style) == (0.5, 50.0, "success")
    assert label.value == "cost $0.5000 of $50.00 (1.0%)"
    view.update(job.model_copy(update={"state": JobState.ACTIVE,
                                       "progress": Progress(percent=90, extra={**extra, "cost": 45.0})}))
    assert view.extras.meters["cost"][0].value == 45.0 and view.extras.meters["cost"][0].bar_style == "warning"
    assert len(view.extras.box.children) == 2, "one bar, updated in place"
