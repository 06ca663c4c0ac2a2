"""`Dashboard`: every queue of a backend, live — counts by state, recent jobs, schedules, and admin buttons."""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import ipywidgets as widgets

from .. import schedules
from ..backends import Backend
from ..config import BackendLike, get_backend, mask_url
from ..metrics import Metrics
from ..models import Job, JobState, QueueCounts, Schedule
from ..queue import Queue
from .background import Background
from .fmt import STATE_COLOURS, duration, error_summary, latency, short_id, sparkline
from .job_view import close_tree, state_badge

__all__ = ["Dashboard"]

NEXT_TIMES = 5  # fire times shown per schedule
SPARK_MINUTES = 30  # minutes of finished jobs in each queue's sparkline
COUNTED = [JobState.WAITING, JobState.DELAYED, JobState.ACTIVE, JobState.COMPLETED, JobState.FAILED,
           JobState.CANCELLED]


def activity_text(m: Metrics) -> str:
    """A queue's finished jobs per minute as a sparkline, with rate, success and p95 run time; or that none ran."""
    if not m.completed_total + m.failed_total:
        return f"no job finished in {len(m.completed)} min"
    rate = m.success_rate or 0.0
    return (f"{sparkline([c + f for c, f in zip(m.completed, m.failed, strict=True)])} "
            f"{m.per_minute(len(m.completed)):.1f}/min, {rate:.0%} ok, p95 run {latency(m.run.p95)}")


class _QueueRow:
    """One queue: its counts and its pause/resume, retry-failed and clean-completed buttons."""

    def __init__(self, dash: Dashboard, name: str) -> None:
        self.name = name
        self.paused = False
        self.label = widgets.HTML(layout=widgets.Layout(min_width="420px"))
        self.pause = widgets.Button(description="Pause", icon="pause", layout=widgets.Layout(width="auto"))
        self.retry = widgets.Button(description="Retry failed", icon="redo", layout=widgets.Layout(width="auto"))
        self.clean = widgets.Button(description="Clean completed", icon="trash", layout=widgets.Layout(width="auto"))
        self.pause.on_click(lambda _: dash.act(name, "resume" if self.paused else "pause"))
        self.retry.on_click(lambda _: dash.act(name, "retry"))
        self.clean.on_click(lambda _: dash.act(name, "clean"))
        self.widget = widgets.HBox([self.label, self.pause, self.retry, self.clean],
                                   layout=widgets.Layout(align_items="center"))

    def show(self, counts: QueueCounts, metrics: Metrics | None = None) -> None:
        self.paused = counts.paused
        parts = [f"{state_badge(s)} {getattr(counts, s.value)}" for s in COUNTED if getattr(counts, s.value)]
        paused = " <b style='color:#b45309'>paused</b>" if counts.paused else ""
        activity = "" if metrics is None else (
            f" &nbsp; <span style='color:#6b7280;font-family:monospace'>{html.escape(activity_text(metrics))}</span>")
        self.label.value = f"<b>{html.escape(self.name)}</b>{paused} &nbsp; {' '.join(parts) or 'empty'}{activity}"
        self.pause.description, self.pause.icon = ("Resume", "play") if counts.paused else ("Pause", "pause")
        self.retry.disabled = counts.failed == 0
        self.clean.disabled = counts.completed == 0


class Dashboard:
    """Live view of a backend's queues, refreshed on their events (at most every `interval` seconds)
    and every `period` seconds anyway, so jobs of other processes and new queues show up."""

    def __init__(
        self, backend: BackendLike = None, queues: Sequence[str] | None = None, *, limit: int = 15,
        interval: float = 0.5, period: float = 5.0,
    ) -> None:
        self._backend_arg = backend
        self.backend: Backend | None = backend if isinstance(backend, Backend) else None
        self.only = list(queues) if queues is not None else None
        self.limit, self.interval, self.period = limit, interval, period
        self.counts: dict[str, QueueCounts] = {}
        self.metrics: dict[str, Metrics] = {}  # each queue's last SPARK_MINUTES minutes
        self.recent: list[Job] = []
        self.schedules: list[Schedule] = []
        self.workers = 0
        self.refreshes = 0
        self.status = ""
        self._rows: dict[str, _QueueRow] = {}
        self._watched: set[str] = set()
        self._dirty = asyncio.Event()
        self.refreshed = asyncio.Event()  # set after every refresh; clear it to wait for the next
        self._bg: Background | None = None  # the live refresh and its subscriptions
        self._actions: Background | None = None  # button clicks

        self.header = widgets.HTML()
        self.queue_box = widgets.VBox()
        self.table = widgets.HTML()
        self.schedule_table = widgets.HTML()
        self.note = widgets.HTML()
        self.widget = widgets.VBox([self.header, self.queue_box, self.table, self.schedule_table, self.note])
        self._render()

    def start(self) -> Dashboard:
        """Keep the dashboard live from tasks on the running loop (idempotent)."""
        if self._bg is None:
            self._bg = Background()
            self._bg.spawn(self._run(), name="jobkit-dashboard")
        return self

    def close(self) -> None:
        for bg in (self._bg, self._actions):
            if bg is not None:
                bg.cancel()
        close_tree(self.widget)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - a passing outage must not kill the dashboard
                self.status = f"refresh failed: {exc}"
                self._render()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.period)
            await asyncio.sleep(self.interval)  # coalesce a burst of events into one refresh
            self._dirty.clear()

    async def refresh(self) -> None:
        """Read counts, workers and recent jobs now, and show them."""
        backend = await self._backend()
        names = self.only if self.only is not None else await backend.queues()
        counts = {q: await backend.counts(q) for q in names}
        span = timedelta(minutes=SPARK_MINUTES - 1)
        self.metrics = {q: await Queue(q, backend=backend).metrics(since=span) for q in names}
        recent: list[Job] = []
        for q in names:
            recent.extend(await backend.list(q, limit=self.limit))
        recent.sort(key=lambda j: (j.created_at, j.seq), reverse=True)
        with_schedules = self.only if self.only is not None else await schedules.list_queues(backend)
        scheduled = [s for q in with_schedules for s in await Queue(q, backend=backend).list_schedules()]
        self.counts, self.recent, self.schedules = counts, recent[: self.limit], scheduled
        self.workers = len(await backend.workers(time.time()))
        self.refreshes += 1
        self._render()
        self.refreshed.set()
        if self._bg is not None:
            for q in names:
                if q not in self._watched:
                    self._watched.add(q)
                    self._bg.spawn(self._watch(backend, q), name=f"jobkit-dashboard-{q}")

    async def _backend(self) -> Backend:
        if self.backend is None:
            self.backend = await get_backend(self._backend_arg)
        return self.backend

    async def _watch(self, backend: Backend, queue: str) -> None:
        events = await backend.subscribe(queue)
        try:
            async for _ in events:
                self._dirty.set()
        finally:
            self._watched.discard(queue)
            await events.aclose()  # type: ignore[attr-defined]

    def act(self, queue: str, action: str) -> None:
        """Run a button's action ("pause", "resume", "retry", "clean") on `queue` in the background."""
        if self._actions is None:
            self._actions = Background()
        self._actions.spawn(self.run_action(queue, action), name=f"jobkit-dashboard-{action}")

    async def run_action(self, queue: str, action: str) -> str:
        """Do one admin action on `queue`, refresh, and return what happened."""
        q = Queue(queue, backend=await self._backend())
        actions: dict[str, Callable[[], Awaitable[str]]] = {
            "pause": lambda: _said(q.pause(), f"paused {queue}"),
            "resume": lambda: _said(q.resume(), f"resumed {queue}"),
            "retry": lambda: _count(q.retry_failed(), f"retried {{}} failed job(s) of {queue}"),
            "clean": lambda: _count(q.clean(JobState.COMPLETED), f"removed {{}} completed job(s) of {queue}"),
        }
        try:
            self.status = await actions[action]()
        except Exception as exc:  # noqa: BLE001 - shown to the user who clicked
            self.status = f"{action} {queue} failed: {exc}"
        await self.refresh()
        return self.status

    def _render(self) -> None:
        url = mask_url(self.backend.url) if self.backend is not None else "connecting…"
        stamp = time.strftime("%H:%M:%S")
        self.header.value = (f"<b>jobkit</b> · {html.escape(url)} · {self.workers} worker(s) alive · "
                             f"<span style='color:#6b7280'>updated {stamp}</span>")
        for name, counts in self.counts.items():
            if name not in self._rows:
                self._rows[name] = _QueueRow(self, name)
            self._rows[name].show(counts, self.metrics.get(name))
        shown = tuple(self._rows[n].widget for n in self.counts)
        if tuple(self.queue_box.children) != shown:
            self.queue_box.children = shown
        self.table.value = _jobs_table(self.recent, time.time())
        self.schedule_table.value = _schedules_table(self.schedules, time.time())
        self.note.value = f"<span style='color:#6b7280'>{html.escape(self.status)}</span>" if self.status else ""

    def text(self) -> str:
        """The dashboard as plain text, for terminals and headless runs."""
        if not self.refreshes:
            return "jobkit dashboard: not loaded yet (live in Jupyter; elsewhere `await dash.refresh()` first)"
        lines = [f"jobkit dashboard: {len(self.counts)} queue(s), {self.workers} worker(s) alive"]
        for name, c in self.counts.items():
            counts = ", ".join(f"{s.value} {getattr(c, s.value)}" for s in COUNTED if getattr(c, s.value))
            m = self.metrics.get(name)
            activity = "" if m is None else f"; {activity_text(m)}"
            lines.append(f"  {name}{' (paused)' if c.paused else ''}: {counts or 'empty'}{activity}")
        now = time.time()
        for sc in self.schedules:
            nexts = ", ".join(schedules.when(sc, at) for at in schedules.upcoming(sc, NEXT_TIMES, now))
            lines.append(f"  schedule {sc.id} ({sc.queue}){' (paused)' if sc.paused else ''}: next {nexts}")
        return "\n".join(lines)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.text()
        return bundle

    def _ipython_display_(self) -> None:
        from .display import display_view

        display_view(self)


async def _said(done: Awaitable[None], message: str) -> str:
    await done
    return message


async def _count(done: Awaitable[int], message: str) -> str:
    return message.format(await done)


def _jobs_table(jobs: list[Job], now: float) -> str:
    """Recent jobs as an HTML table: id, task, queue, state, progress, age, error."""
    if not jobs:
        return "<div style='color:#6b7280'>no jobs yet</div>"
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>"
                   for h in ("id", "task", "queue", "state", "progress", "age", "error"))
    rows = []
    for j in jobs:
        pct = j.progress.percent
        bar = (f"<div style='display:inline-block;width:80px;height:8px;background:#e5e7eb;border-radius:4px'>"
               f"<div style='width:{pct:.0f}%;height:8px;background:{STATE_COLOURS[j.state]};border-radius:4px'>"
               f"</div></div> {pct:.0f}%")
        err = error_summary(j, 80)
        cells = (f"<code>{short_id(j.id)}</code>", html.escape(j.name), html.escape(j.queue), state_badge(j.state),
                 bar, duration(now - j.created_at), f"<span title='{html.escape(j.error or '')}' "
                 f"style='color:{STATE_COLOURS[JobState.FAILED]}'>{html.escape(err)}</span>")
        rows.append("<tr>" + "".join(f"<td style='padding:2px 8px'>{c}</td>" for c in cells) + "</tr>")
    return f"<table class='jobkit-jobs'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _schedules_table(found: list[Schedule], now: float) -> str:
    """Schedules as an HTML table: id, queue, task, timing, the next fire times, fired and skipped ticks."""
    if not found:
        return ""
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>"
                   for h in ("schedule", "queue", "task", "timing", f"next {NEXT_TIMES} fire times", "fired",
                             "skipped"))
    rows = []
    for s in found:
        timing = f"<code>{html.escape(s.cron)}</code> {html.escape(s.tz)}" if s.cron else f"every {s.every:g}s"
        nexts = "<br>".join(html.escape(schedules.when(s, at)) for at in schedules.upcoming(s, NEXT_TIMES, now))
        paused = " <b style='color:#b45309'>paused</b>" if s.paused else ""
        cells = (f"<b>{html.escape(s.id)}</b>{paused}", html.escape(s.queue), html.escape(s.task), timing, nexts,
                 str(s.fired), str(s.skipped))
        rows.append("<tr>" + "".join(f"<td style='padding:2px 8px;vertical-align:top'>{c}</td>" for c in cells)
                    + "</tr>")
    return (f"<table class='jobkit-schedules'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            "</table>")
