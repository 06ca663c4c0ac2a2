"""Text progress for terminals, plain IPython and headless runs: one line per job."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..handle import JobHandle
from ..models import Job, JobState
from .feed import JobsFeed
from .fmt import error_summary, short_id, timing_text
from .throttle import Throttle

__all__ = ["render_text", "watch_text"]


def render_text(job: Job, width: int = 24, now: float | None = None) -> str:
    """One line: name, id, bar, percent, state, message, timing and attempts, and the error if it failed."""
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
    return " · ".join(parts)


async def watch_text(
    handles: Sequence[JobHandle[Any]], stream: TextIO | None = None, *, interval: float = 0.1
) -> list[Job]:
    """Show the jobs' progress on `stream` until all have finished; return them in the order given.

    On a terminal the lines are redrawn in place (at most 1/`interval` times a second); elsewhere
    (a log, a notebook's output) a line is printed each time a job changes state, then a final one per job.
    """
    out = stream or sys.stdout
    tty = out.isatty()
    keys = [(h.queue, h.id) for h in handles]
    drawn = 0
    states: dict[tuple[str, str], JobState] = {}

    def redraw(feed: JobsFeed) -> None:
        nonlocal drawn
        lines = [render_text(feed.jobs[k]) for k in keys]
        if drawn:
            out.write(f"\x1b[{drawn}F")
        out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        drawn = len(lines)
        out.flush()

    def changed(job: Job) -> None:
        if tty:
            throttle.push(feed)
        elif not job.finished and states.get((job.queue, job.id)) is not job.state:
            states[(job.queue, job.id)] = job.state
            out.write(render_text(job) + "\n")
            out.flush()

    feed = JobsFeed(handles, changed)
    throttle: Throttle[JobsFeed] = Throttle(redraw, interval)
    try:
        await feed.run()
    finally:
        throttle.close()
    if not tty:
        out.write("".join(render_text(feed.jobs[k]) + "\n" for k in keys))
        out.flush()
    return [feed.jobs[k] for k in keys]
