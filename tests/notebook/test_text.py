"""Text progress: one honest line per job, and a watcher that prints until all jobs are done."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest
from rich.cells import cell_len
from rich.text import Text

import jobkit
from jobkit.backends import Backend
from jobkit.models import HistoryEntry, Job, JobOptions, JobState, Progress
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


def test_render_text_of_a_retrying_job_says_why_it_started_again() -> None:
    job = make_job(state=JobState.DELAYED, attempts=1, options=JobOptions(attempts=3), error="RuntimeError: 429",
                   history=[HistoryEntry(at=1.0, state=JobState.WAITING, note="added"),
                            HistoryEntry(at=2.0, state=JobState.ACTIVE, attempt=1),
                            HistoryEntry(at=3.0, state=JobState.DELAYED, attempt=1, note="RuntimeError: 429")])
    assert render_text(job, now=4.0).endswith("attempt 1 of 3 · attempt 1 failed: RuntimeError: 429")
    done = job.model_copy(update={"state": JobState.COMPLETED, "attempts": 2, "error": None, "history": [
        *job.history, HistoryEntry(at=4.0, state=JobState.ACTIVE, attempt=2),
        HistoryEntry(at=5.0, state=JobState.COMPLETED, attempt=2)]})
    assert "attempt 1 failed: RuntimeError: 429" in render_text(done, now=6.0)
    reset = done.model_copy(update={"state": JobState.WAITING, "attempts": 0, "history": [
        *done.history, HistoryEntry(at=7.0, state=JobState.WAITING, attempt=0, note="retried by request")]})
    assert "failed" not in render_text(reset, now=8.0)  # a person's retry starts the story afresh


def live_lines(jobs: list[Job], width: int, height: int = 40) -> list[str]:
    from rich.console import Console

    from jobkit.notebook.live import JobRows

    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    with console.capture() as captured:
        console.print(JobRows(lambda: jobs, clock=lambda: 100.0))
    return Text.from_ansi(captured.get()).plain.splitlines()


LONG = [
    make_job(id="a" * 32, name="reports.quarterly_revenue_by_region_and_product", state=JobState.ACTIVE,
             progress=Progress(percent=42.5, message="aggregating " + "very " * 40 + "long"), attempts=1,
             started_at=90.0),
    make_job(id="b" * 32, name="ai.generate", state=JobState.ACTIVE, progress=Progress(percent=10), attempts=2,
             options=JobOptions(attempts=3), started_at=95.0, error="RuntimeError: 429 Too Many Requests " + "x" * 200,
             history=[HistoryEntry(at=91.0, state=JobState.DELAYED, attempt=1, note="RuntimeError: 429 Too Many")]),
    make_job(id="c" * 32, name="excel.import", state=JobState.FAILED, attempts=1, started_at=1.0, finished_at=3.0,
             error="Traceback...\nValueError: " + "no header row " * 20),
    make_job(id="d" * 32, name="flow.parent", state=JobState.WAITING_CHILDREN),
]


@pytest.mark.parametrize("width", [40, 80, 120])
def test_live_rows_fit_the_width_with_two_rows_per_job(width: int) -> None:
    lines = live_lines(LONG, width)
    assert len(lines) == 2 * len(LONG) + 1 and all(cell_len(line) <= width for line in lines), lines
    heads, details = lines[0:-1:2], lines[1:-1:2]
    assert all(not h.startswith(" ") for h in heads) and all(d.startswith("  ") for d in details), lines
    assert details[1].startswith("  attempt 1 failed: RuntimeError: 429")  # why its bar is back at 10%
    assert details[2].startswith("  error: ValueError: no header row")
    assert lines[-1].startswith("1 of 4 finished")


def test_live_rows_past_the_terminal_height_show_the_most_interesting_jobs() -> None:
    jobs = [make_job(id=f"{i:032d}", name="bulk", state=JobState.COMPLETED) for i in range(30)]
    jobs[17] = make_job(id="f" * 32, name="bulk", state=JobState.FAILED, error="ValueError: boom")
    lines = live_lines(jobs, 80, height=12)
    assert len(lines) == 2 * 5 + 1 and "error: ValueError: boom" in "\n".join(lines)
    assert lines[-1].endswith("25 not shown (terminal too short)")


def test_importing_jobkit_or_its_cli_does_not_import_rich() -> None:
    """rich loads only where it draws: a live terminal view, the CLI's tables, the demo."""
    code = "import sys, jobkit, jobkit.cli, jobkit.demo; print(sorted(m for m in sys.modules if m.startswith('rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
