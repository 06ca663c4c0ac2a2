"""`GroupView`: many jobs in one compact view, an overall bar and a line per job."""

from __future__ import annotations

import asyncio
import html
from collections import Counter
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

from ..handle import JobHandle
from ..models import Job, JobState
from ..task import _registry
from .background import Background
from .feed import JobsFeed
from .fmt import BAR_STYLES, STATE_COLOURS, error_summary, short_id
from .job_view import close_tree, state_badge
from .text import render_text
from .throttle import Throttle

__all__ = ["GroupView", "child_handles"]

MAX_LINES = 30  # past this many jobs, lines become one table of the most interesting jobs
_ORDER = {JobState.FAILED: 0, JobState.ACTIVE: 1, JobState.CANCELLED: 2, JobState.DELAYED: 3,
          JobState.WAITING: 4, JobState.WAITING_CHILDREN: 4, JobState.COMPLETED: 5}


async def child_handles(parent: JobHandle[Any]) -> list[JobHandle[Any]]:
    """Handles of a flow parent's children (and dependencies), in order."""
    out: list[JobHandle[Any]] = []
    offset = 0
    while True:
        page = await parent.backend.children(parent.queue, parent.id, offset=offset, limit=500)
        out.extend(JobHandle(job, parent.backend, _registry.get(job.name)) for _, job in page if job is not None)
        if len(page) < 500:
            return out
        offset += len(page)


class _Line:
    """One job's line: name and id, a small bar, percent, state and message (or error)."""

    def __init__(self, job: Job) -> None:
        title = f"<b>{html.escape(job.name)}</b> <span style='color:#6b7280'>{short_id(job.id)}</span>"
        self.name = widgets.HTML(title, layout=widgets.Layout(width="220px"))
        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=100.0, layout=widgets.Layout(width="200px"))
        self.percent = widgets.Label(layout=widgets.Layout(width="48px"))
        self.state = widgets.HTML()
        self.message = widgets.Label()
        self.widget = widgets.HBox([self.name, self.bar, self.percent, self.state, self.message],
                                   layout=widgets.Layout(align_items="center"))

    def show(self, job: Job) -> None:
        self.bar.value = job.progress.percent
        self.bar.bar_style = BAR_STYLES.get(job.state, "")
        self.percent.value = f"{job.progress.percent:.0f}%"
        self.state.value = state_badge(job.state)
        self.message.value = error_summary(job) if job.state is JobState.FAILED else job.progress.message


class GroupView:
    """An overall bar and summary over `handles`, with a line per job (a table of the top jobs past MAX_LINES).

    With `children_of`, a flow's parent: the view shows the parent and its children, read when it starts."""

    def __init__(self, handles: Sequence[JobHandle[Any]], *, interval: float = 0.1, max_lines: int = MAX_LINES,
                 children_of: JobHandle[Any] | None = None) -> None:
        self.max_lines = max_lines
        self._children_of = children_of
        self._throttle: Throttle[None] = Throttle(lambda _: self._render(), interval)
        self._bg: Background | None = None
        self._ended = asyncio.Event()
        self.problem = ""
        self.summary = widgets.HTML()
        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=100.0, layout=widgets.Layout(width="50%"))
        self.percent = widgets.Label()
        self.table = widgets.HTML()
        self.widget = widgets.VBox()
        self._follow_jobs(list(handles))

    def _follow_jobs(self, handles: list[JobHandle[Any]]) -> None:
        """Show `handles`: a line each, or one table past max_lines."""
        self.handles = handles
        self._changed: set[tuple[str, str]] = set()
        self.feed = JobsFeed(self.handles, self._on_change)
        self.keys = list(dict.fromkeys((h.queue, h.id) for h in self.handles))
        self.collapsed = len(self.keys) > self.max_lines
        self.lines: dict[tuple[str, str], _Line] = {}
        if self.collapsed:
            body: list[Any] = [self.table]
        else:
            self.lines = {k: _Line(self.feed.jobs[k]) for k in self.keys}
            body = [line.widget for line in self.lines.values()]
        self.widget.children = [
            self.summary,
            widgets.HBox([self.bar, self.percent], layout=widgets.Layout(align_items="center")),
            *body,
        ]
        self._changed.update(self.keys)
        self._render()

    @property
    def jobs(self) -> list[Job]:
        """The jobs as last seen, one per distinct handle."""
        return [self.feed.jobs[k] for k in self.keys]

    @property
    def renders(self) -> int:
        return self._throttle.renders

    def start(self) -> GroupView:
        """Follow the jobs from a task on the running loop (idempotent)."""
        if self._bg is None:
            self._bg = Background()
            self._bg.spawn(self._follow(), name="jobkit-group-view")
        return self

    async def _follow(self) -> None:
        try:
            if self._children_of is not None:
                parent, self._children_of = self._children_of, None
                self._follow_jobs([parent, *await child_handles(parent)])
            await self.feed.run()
        except asyncio.CancelledError:
            self.problem = "stopped following the jobs (the view was closed)"
            raise
        except Exception as exc:  # noqa: BLE001 - shown in the view instead of lost in a background task
            self.problem = f"stopped following the jobs: {exc}"
        finally:
            self._throttle.flush()
            self._render()
            self._ended.set()

    async def wait(self, timeout: float | None = None) -> list[Job]:
        """Follow the jobs (if not yet) until all have finished; returns them."""
        self.start()
        await asyncio.wait_for(self._ended.wait(), timeout)
        return self.jobs

    def close(self) -> None:
        if self._bg is not None:
            self._bg.cancel()
        if not self._ended.is_set():
            self.problem = "stopped following the jobs (the view was closed)"
            self._ended.set()
        close_tree(self.widget)

    def _on_change(self, job: Job) -> None:
        self._changed.add((job.queue, job.id))
        self._throttle.push(None)

    def _render(self) -> None:
        jobs = self.jobs
        counts = Counter(j.state for j in jobs)
        done = sum(counts[s] for s in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED))
        overall = sum(100.0 if j.finished else j.progress.percent for j in jobs) / max(1, len(jobs))
        self.bar.value = overall
        self.percent.value = f"{overall:.0f}%"
        all_done = done == len(jobs)
        self.bar.bar_style = ("danger" if counts[JobState.FAILED] else "success") if all_done else "info"
        states = " ".join(f"{state_badge(s)} {n}" for s, n in sorted(counts.items(), key=lambda i: _ORDER[i[0]]))
        problem = f" <span style='color:{STATE_COLOURS[JobState.FAILED]}'>{html.escape(self.problem)}</span>"
        self.summary.value = (f"<b>{done} of {len(jobs)} jobs finished</b> &nbsp; {states}"
                              + (problem if self.problem else ""))
        if self.collapsed:
            self.table.value = self._table(jobs)
        else:
            for key in self._changed:
                self.lines[key].show(self.feed.jobs[key])
        self._changed.clear()

    def _table(self, jobs: list[Job]) -> str:
        top = sorted(jobs, key=lambda j: (_ORDER[j.state], -j.progress.percent))[: self.max_lines]
        rows = "".join(
            f"<tr><td><b>{html.escape(j.name)}</b> {short_id(j.id)}</td><td>{j.progress.percent:.0f}%</td>"
            f"<td>{state_badge(j.state)}</td><td>{html.escape(error_summary(j) or j.progress.message)}</td></tr>"
            for j in top)
        more = len(jobs) - len(top)
        foot = f"<div style='color:#6b7280'>… and {more} more</div>" if more else ""
        return f"<table class='jobkit-group'>{rows}</table>{foot}"

    @property
    def ended(self) -> bool:
        """The view has stopped following its jobs (all finished, or the view was closed)."""
        return self._ended.is_set()

    def _latest(self) -> list[Job]:
        """The jobs as last seen by the feed, or by their handles when those saw the end first (awaited handles)."""
        lasts = {(h.queue, h.id): h.last for h in self.handles}
        return [lasts[k] if lasts[k].finished and not self.feed.jobs[k].finished else self.feed.jobs[k]
                for k in self.keys]

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "\n".join(render_text(j) for j in self._latest())
        return bundle

    def _ipython_display_(self) -> None:
        from .display import display_view

        display_view(self)
