"""Live job rows on a terminal, drawn by rich: two rows per job, each cut to the terminal's width, never wrapped."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from ..handle import JobHandle
from ..models import Job, JobState
from .feed import JobsFeed
from .fmt import STATE_COLOURS, error_summary, retry_reason, short_id, timing_text
from .throttle import Throttle

__all__ = ["ROWS_PER_JOB", "JobRows", "watch_live"]

ROWS_PER_JOB = 2  # what a redraw relies on: a job is always this many rows, whatever the width
CLOCK_TICK = 1.0  # seconds between redraws of elapsed times while no job changes
_INTEREST = {JobState.FAILED: 0, JobState.ACTIVE: 1, JobState.DELAYED: 2, JobState.WAITING: 3,
             JobState.WAITING_CHILDREN: 3, JobState.CANCELLED: 4, JobState.COMPLETED: 5}


def _cut(text: Text, width: int) -> Text:
    text.no_wrap, text.overflow = True, "ellipsis"
    text.truncate(width, overflow="ellipsis")
    return text


def _bar(percent: float, width: int, colour: str) -> Text:
    fill = round(width * percent / 100)
    return Text.assemble(("━" * fill, colour), ("━" * (width - fill), "grey35"))


class JobRows:
    """Per job, a head row (name, id, bar, percent, state) and a detail row (message, timing, and why it failed
    or retried); below them one summary row. Past the terminal's height, the most interesting jobs are shown."""

    def __init__(self, jobs: Callable[[], Sequence[Job]], clock: Callable[[], float] = time.time) -> None:
        self.jobs = jobs
        self.clock = clock

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        jobs = list(self.jobs())
        room = max(1, (options.size.height - 2) // ROWS_PER_JOB)
        shown = jobs if len(jobs) <= room else self._pick(jobs, room)
        name_w = min(max((len(j.name) for j in shown), default=4), max(12, width // 4))
        bar_w = max(8, min(40, width - name_w - 30))
        now = self.clock()
        for job in shown:
            yield self._head(job, width, name_w, bar_w)
            yield self._detail(job, width, now)
        yield self._summary(jobs, len(jobs) - len(shown), width)

    @staticmethod
    def _pick(jobs: list[Job], room: int) -> list[Job]:
        ranked = sorted(range(len(jobs)), key=lambda i: (_INTEREST[jobs[i].state], i))[:room]
        return [jobs[i] for i in sorted(ranked)]

    @staticmethod
    def _head(job: Job, width: int, name_w: int, bar_w: int) -> Text:
        colour = STATE_COLOURS[job.state]
        pct = job.progress.percent
        name = job.name if len(job.name) <= name_w else job.name[: name_w - 1] + "…"
        head = Text.assemble((name.ljust(name_w), "bold"), " ", (short_id(job.id).ljust(8), "dim"), " ",
                             _bar(pct, bar_w, colour), f" {pct:3.0f}% ", (job.state.value, colour))
        return _cut(head, width)

    @staticmethod
    def _detail(job: Job, width: int, now: float) -> Text:
        detail = Text("  ")
        parts: list[tuple[str, str]] = []
        if job.state is JobState.FAILED and job.error:
            parts.append((f"error: {error_summary(job)}", STATE_COLOURS[JobState.FAILED]))
        else:
            if job.progress.message:
                parts.append((job.progress.message, ""))
            if reason := retry_reason(job):
                parts.append((reason, STATE_COLOURS[JobState.DELAYED]))
        if timing := timing_text(job, now):
            parts.append((timing, "dim"))
        for i, (text, style) in enumerate(parts):
            detail.append(" · " if i else "", "dim")
            detail.append(text, style)
        return _cut(detail, width)

    @staticmethod
    def _summary(jobs: list[Job], hidden: int, width: int) -> Text:
        counts = Counter(j.state for j in jobs)
        done = sum(counts[s] for s in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED))
        summary = Text(f"{done} of {len(jobs)} finished", "bold")
        for state, n in sorted(counts.items(), key=lambda item: _INTEREST[item[0]]):
            summary.append(" · ", "dim")
            summary.append(f"{n} {state.value}", STATE_COLOURS[state])
        if hidden:
            summary.append(f" · {hidden} not shown (terminal too short)", "dim")
        return _cut(summary, width)


async def watch_live(
    handles: Sequence[JobHandle[Any]], out: TextIO, *, interval: float = 0.1
) -> dict[tuple[str, str], Job]:
    """Redraw the jobs' rows in place on the terminal `out` until every job has finished; returns them by key."""
    keys = list(dict.fromkeys((h.queue, h.id) for h in handles))
    live = Live(console=Console(file=out), auto_refresh=False, transient=False)
    throttle: Throttle[None] = Throttle(lambda _: live.refresh(), interval)
    feed = JobsFeed(handles, lambda _job: throttle.push(None))
    live.update(JobRows(lambda: [feed.jobs[k] for k in keys]))
    with live:
        following = asyncio.ensure_future(feed.run())
        try:
            while not following.done():
                await asyncio.wait({following}, timeout=CLOCK_TICK)
                throttle.push(None)  # elapsed times and ETAs move on even while no job changes
            following.result()
        finally:
            following.cancel()
            throttle.close()
            live.refresh()
    return feed.jobs
