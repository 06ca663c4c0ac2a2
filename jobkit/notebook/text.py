"""Text progress for terminals, plain IPython and headless runs: live rows on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..handle import JobHandle
from ..models import Job, JobState
from .feed import JobsFeed
from .fmt import error_summary, retry_reason, short_id, timing_text

__all__ = ["render_text", "watch_text"]


def render_text(job: Job, width: int = 24, now: float | None = None) -> str:
    """One line: name, id, bar, percent, state, message, timing and attempts, and why it failed or retried."""
    pct = job.progress.percent
    fill = round(width * pct / 100)
    parts = [f"{job.name} {short_id(job.id)} [{'#' * fill}{'.' * (width - fill)}] {pct:5.1f}% {job.state.value}"]
    if job.progress.message:
        parts.append(job.progress.message)
    timing = timing_text(job, time.time() if now is None else now)
    if timing:
        parts.append(timing)
    if job.state is JobState.FAILED and job.error:
        parts.append(f"error: {error_summary(job)}")
    elif reason := retry_reason(job):
        parts.append(reason)
    return " · ".join(parts)


async def watch_text(
    handles: Sequence[JobHandle[Any]], stream: TextIO | None = None, *, interval: float = 0.1
) -> list[Job]:
    """Show the jobs' progress on `stream` until all have finished; return them in the order given.

    On a terminal, rich redraws a fixed number of rows per job in place, fitted to the terminal's width
    (at most 1/`interval` times a second). Elsewhere (a pipe, a log, a notebook's output) a plain line is
    printed each time a job changes state, a retry with its reason, then a final line per job.
    """
    out = stream or sys.stdout
    if out.isatty():
        from .live import watch_live  # rich only when a terminal shows it

        jobs = await watch_live(handles, out, interval=interval)
    else:
        jobs = await _watch_lines(handles, out)
    return [jobs[(h.queue, h.id)] for h in handles]


async def _watch_lines(handles: Sequence[JobHandle[Any]], out: TextIO) -> dict[tuple[str, str], Job]:
    """A line per change of state (a retry says why), then the final line of each job: no cursor movement."""
    states: dict[tuple[str, str], tuple[JobState, int]] = {}

    def changed(job: Job) -> None:
        key, seen = (job.queue, job.id), (job.state, job.attempts)
        if not job.finished and states.get(key) != seen:
            states[key] = seen
            out.write(render_text(job) + "\n")
            out.flush()

    feed = JobsFeed(handles, changed)
    await feed.run()
    out.write("".join(render_text(job) + "\n" for job in feed.jobs.values()))
    out.flush()
    return feed.jobs
