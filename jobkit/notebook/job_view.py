"""`JobView`: a live ipywidgets view of one job, fed by its handle's events on the kernel's loop."""

from __future__ import annotations

import asyncio
import html
import time
from typing import Any

import ipywidgets as widgets

from ..handle import JobHandle
from ..models import Job, JobState
from .background import Background
from .extras import ExtrasView
from .fmt import BAR_STYLES, STATE_COLOURS, error_summary, short_id, timing_text
from .text import render_text
from .throttle import Throttle

__all__ = ["JobView", "close_tree", "state_badge"]

CLOCK_TICK = 1.0  # seconds between refreshes of the elapsed time and ETA while nothing else changes


def state_badge(state: JobState) -> str:
    """The state as a small coloured pill, in HTML."""
    return (f'<span class="jobkit-state" style="background:{STATE_COLOURS[state]};color:white;border-radius:8px;'
            f'padding:1px 8px;font-size:0.85em">{state.value}</span>')


def close_tree(widget: Any) -> None:
    """Close a widget and every widget inside it (the frontend forgets their models)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


class JobView:
    """Bar, percent, message, state, elapsed time and ETA, attempt n of m, progress extras (with a bar for each
    that has a limit), error, and a Cancel button.

    `start()` follows the job from a task on the running loop until it finishes, so the view keeps
    moving after the cell returns; renders are throttled to one per `interval` seconds, the last always shown.
    """

    def __init__(self, handle: JobHandle[Any], *, interval: float = 0.1) -> None:
        self.handle = handle
        self.job: Job = handle.last
        self.watching = False
        self.problem = ""  # why the view stopped following the job, if not because it finished
        self._bg: Background | None = None
        self._throttle: Throttle[Job] = Throttle(self._render, interval)
        self._clock: asyncio.TimerHandle | None = None
        self._ended = asyncio.Event()

        self.title = widgets.HTML(
            f"<b>{html.escape(handle.name)}</b> <span style='color:#6b7280'>{short_id(handle.id)} · "
            f"{html.escape(handle.queue)}</span>")
        self.state = widgets.HTML()
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", tooltip="Cancel this job",
                                            layout=widgets.Layout(width="auto"))
        self.cancel_button.on_click(self._on_cancel)
        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=100.0, layout=widgets.Layout(width="50%"))
        self.percent = widgets.Label()
        self.message = widgets.Label()
        self.timing = widgets.HTML()
        self.extras = ExtrasView()  # the progress extras; a bar for each one with a limit (cost vs cost_limit)
        self.error = widgets.HTML()
        self.widget = widgets.VBox([
            widgets.HBox([self.title, self.state, self.cancel_button], layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.bar, self.percent, self.message], layout=widgets.Layout(align_items="center")),
            self.timing,
            self.extras.box,
            self.error,
        ])
        self._render(self.job)

    @property
    def renders(self) -> int:
        return self._throttle.renders

    def start(self) -> JobView:
        """Follow the job from a task on the running loop (idempotent)."""
        if not self.watching and not self._ended.is_set():
            self._bg = self._bg or Background()
            self.watching = True
            self._bg.spawn(self._feed(), name=f"jobkit-view-{self.handle.id}")
        return self

    async def _feed(self) -> None:
        try:
            async for job in self.handle.updates():
                self.update(job)
            if not self.job.finished:
                self.problem = "stopped following the job: its backend was closed"
        except asyncio.CancelledError:
            self.problem = self.problem or "stopped following the job (the view was closed)"
            raise
        except Exception as exc:  # noqa: BLE001 - shown in the view instead of lost in a background task
            self.problem = f"stopped following the job: {exc}"
        finally:
            self.watching = False
            self._stop_clock()
            self._throttle.flush()
            self._render(self.job)
            self._ended.set()

    def update(self, job: Job) -> None:
        """Show `job` (throttled; a finished job is shown at once)."""
        self.job = job
        self._throttle.push(job)
        if job.finished:
            self._throttle.flush()

    def flush(self) -> None:
        """Render the latest update now."""
        self._throttle.flush()

    async def wait(self, timeout: float | None = None) -> Job:
        """Wait until the view has stopped following its job; returns the job as last shown."""
        await asyncio.wait_for(self._ended.wait(), timeout)
        return self.job

    def close(self) -> None:
        """Stop following the job and close the widgets."""
        if self._bg is not None:
            self._bg.cancel()
        if not self._ended.is_set():  # the feed may be cancelled before it ever ran
            self.watching, self.problem = False, "stopped following the job (the view was closed)"
            self._ended.set()
        self._stop_clock()
        close_tree(self.widget)

    def _render(self, job: Job) -> None:
        pct = job.progress.percent
        self.bar.value = pct
        self.bar.bar_style = BAR_STYLES.get(job.state, "")
        self.percent.value = f"{pct:.0f}%"
        self.message.value = job.progress.message
        self.extras.render(job.progress.extra)
        self.state.value = state_badge(job.state)
        self.cancel_button.layout.display = "none" if job.finished else None
        if job.cancel_requested and not job.finished:
            self.cancel_button.disabled, self.cancel_button.description = True, "Cancelling…"
        summary = error_summary(job) if job.state is JobState.FAILED else ""
        notes = [n for n in (summary, self.problem) if n]
        self.error.value = "".join(f"<span style='color:{STATE_COLOURS[JobState.FAILED]}'>{html.escape(n)}</span><br>"
                                   for n in notes)
        self._render_timing()
        if job.state is JobState.ACTIVE and self.watching and self._clock is None:
            self._clock = asyncio.get_running_loop().call_later(CLOCK_TICK, self._tick)

    def _render_timing(self) -> None:
        self.timing.value = f"<span style='color:#6b7280;font-size:0.9em'>{timing_text(self.job, time.time())}</span>"

    def _tick(self) -> None:
        self._clock = None
        if self.watching and self.job.state is JobState.ACTIVE:
            self._render_timing()
            self._clock = asyncio.get_running_loop().call_later(CLOCK_TICK, self._tick)

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def _on_cancel(self, _button: Any = None) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling…"
        self._bg = self._bg or Background()
        self._bg.spawn(self._cancel(), name=f"jobkit-cancel-{self.handle.id}")

    async def _cancel(self) -> None:
        try:
            self.update(await self.handle.cancel())
        except Exception as exc:  # noqa: BLE001 - shown to the user who clicked
            self.problem = f"cancel failed: {exc}"
            self._render(self.job)
        finally:
            if not self.job.cancel_requested:
                self.cancel_button.disabled, self.cancel_button.description = False, "Cancel"

    @property
    def ended(self) -> bool:
        """The view has stopped following its job (it finished, or the view was closed)."""
        return self._ended.is_set()

    @property
    def latest(self) -> Job:
        """The job as last seen by the view, or by its handle when that saw the end first (an awaited handle)."""
        last = self.handle.last
        return last if last.finished and not self.job.finished else self.job

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render_text(self.latest)
        return bundle

    def _ipython_display_(self) -> None:
        from .display import display_view

        display_view(self)
