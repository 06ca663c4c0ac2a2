"""Text progress: one honest line per job, and a watcher that prints until all jobs are done."""

from __future__ import annotations

import io
from typing import Any

import jobkit
from jobkit.backends import Backend
from jobkit.models import Job, JobOptions, JobState, Progress
from jobkit.notebook import render_text, watch_text

from .conftest import broken, steps


def make_job(**kw: object) -> Job:
    base: dict[str, object] = {"id": "abcdef1234567890", "name": "import", "queue": "nb"}
    return Job.model_validate({**base, **kw})


def test_render_text_of_an_active_job() -> None:
    job = make_job(state=JobState.ACTIVE, progress=Progress(percent=50, message="half"), attempts=2,
                   options=JobOptions(attempts=3), started_at=100.0)
    line = render_text(job, width=10, now=110.0)
    assert line == "import abcdef12 [#####.....]  50.0% active · half · elapsed 10s · ETA 10s · attempt 2 of 3"


def test_render_text_of_a_failed_job_shows_the_error_summary() -> None:
    job = make_job(state=JobState.FAILED, attempts=1, started_at=1.0, finished_at=3.5,
                   error="Traceback...\nValueError: no header row")
    line = render_text(job, now=99.0)
    assert "failed" in line and "took 2.5s" in line and line.endswith("error: ValueError: no header row")


def test_render_text_of_a_waiting_job() -> None:
    assert render_text(make_job(), width=4) == "import abcdef12 [....]   0.0% waiting"


async def test_watch_text_prints_state_changes_then_final_lines(memory: Backend) -> None:
    handles: list[jobkit.JobHandle[Any]] = [await jobkit.submit(steps, 200, backend=memory),
                                            await jobkit.submit(broken, backend=memory)]
    out = io.StringIO()
    jobs = await watch_text(handles, out)
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.FAILED]
    lines = out.getvalue().splitlines()
    assert lines[-2].startswith("nb.steps") and "100.0% completed" in lines[-2]
    assert "error: ValueError: the spreadsheet has no header row" in lines[-1]
    assert "\x1b" not in out.getvalue()  # not a terminal: no cursor movement
