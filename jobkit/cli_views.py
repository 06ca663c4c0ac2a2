"""What the `jobkit` command prints: rich tables and a job's card for people, the models' JSON for machines."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from . import schedules
from .metrics import Metrics
from .models import Job, JobState, QueueCounts, Schedule, WorkerInfo
from .notebook.fmt import STATE_COLOURS, duration, error_summary, latency

__all__ = ["METRICS_SPAN", "console", "job_card", "jobs_table", "metrics_table", "print_json", "schedules_view",
           "status_view", "when"]

SHOWN_CHARS = 2000  # of a payload or result in `jobs show`; `--json` prints all of it
_PLAIN: dict[str, Any] = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "title_justify": "left"}
COUNTED = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
METRICS_SPAN = 15  # minutes of metrics `jobkit status` shows


def console() -> Console:
    """Where the CLI prints for people: stdout, fitted to the terminal's width (COLUMNS when set), colours only
    on a terminal."""
    return Console(highlight=False)


def print_json(data: Any) -> None:
    """Print for machines: one JSON document, never wrapped or coloured."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def when(ts: float | None, now: float) -> str:
    """e.g. "2026-12-07 01:02:03 UTC (3.0s ago)"; "-" for never."""
    if ts is None:
        return "-"
    stamp = datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({duration(now - ts)} ago)" if ts <= now else f"{stamp} (in {duration(ts - now)})"


def _ago(ts: float, now: float) -> str:
    return f"{duration(now - ts)} ago" if ts <= now else f"in {duration(ts - now)}"


def _state(job: Job) -> Text:
    return Text(job.state.value, STATE_COLOURS[job.state])


def metrics_table(metrics: Mapping[str, Metrics]) -> Table:
    """Each queue's last minutes: jobs finished per minute, the share that completed, p95 wait and run times."""
    table = Table(title=f"last {METRICS_SPAN} minutes", **_PLAIN)
    table.add_column("queue", overflow="fold")
    for name in ("rate/min", "success", "p95 wait", "p95 run"):
        table.add_column(name, justify="right")
    for queue, m in metrics.items():
        rate = m.success_rate
        table.add_row(queue, f"{m.per_minute(METRICS_SPAN):.1f}", "-" if rate is None else f"{rate:.0%}",
                      latency(m.wait.p95), latency(m.run.p95))
    return table


def status_view(url: str, workers: Sequence[WorkerInfo], counts: Mapping[str, QueueCounts], now: float,
                metrics: Mapping[str, Metrics] | None = None) -> Group:
    """The backend, its live workers, its queues' counts and (when given) their recent metrics."""
    parts: list[RenderableType] = [Text.assemble(("backend ", "bold"), url)]
    if workers:
        wt = Table(title=f"{len(workers)} worker(s) alive", **_PLAIN)
        for name in ("worker", "queues", "busy", "started", "seen"):
            wt.add_column(name, overflow="fold")
        for w in workers:
            kind = " (embedded)" if w.embedded else ""
            wt.add_row(w.id + kind, ", ".join(w.queues), f"{w.active}/{w.concurrency}", _ago(w.started_at, now),
                       _ago(w.seen_at, now))
        parts.append(wt)
    else:
        parts.append(Text("no worker alive", "dim"))
    if counts:
        qt = Table(title=f"{len(counts)} queue(s)", **_PLAIN)
        qt.add_column("queue", overflow="fold")
        for name in COUNTED:
            qt.add_column(name, justify="right")
        qt.add_column("paused")
        for queue, c in counts.items():
            qt.add_row(queue, *(str(getattr(c, name)) for name in COUNTED), "paused" if c.paused else "")
        parts.append(qt)
        if metrics:
            parts.append(metrics_table(metrics))
    else:
        parts.append(Text("no queue yet", "dim"))
    return Group(*parts)


def jobs_table(queue: str, jobs: Sequence[Job], now: float, width: int) -> Table | Text:
    """One row per job: its whole id (to pass to `jobs show`), task, state (with progress while it runs), and as
    the terminal's `width` allows, tries, age and the error's last line."""
    if not jobs:
        return Text(f"no jobs in queue {queue!r} match", "dim")
    id_w = max(len(j.id) for j in jobs)
    room = width - id_w - 10 - 12  # task and state at their narrowest, and the gaps between them
    extra = [name for name, need in (("tries", 7), ("age", 11), ("error", 16)) if (room := room - need) >= 0]
    table = Table(title=f"{len(jobs)} job(s) in queue {queue!r}", **_PLAIN)
    table.add_column("id", no_wrap=True, min_width=id_w)
    table.add_column("task", overflow="fold", min_width=8)
    table.add_column("state", no_wrap=True, min_width=10)
    if "tries" in extra:
        table.add_column("tries", justify="right", no_wrap=True, min_width=5)
    if "age" in extra:
        table.add_column("age", no_wrap=True, min_width=9)
    if "error" in extra:
        table.add_column("error", overflow="ellipsis", no_wrap=True, ratio=1)
    for j in jobs:
        state = _state(j)
        if not j.finished and j.progress.percent:
            state.append(f" {j.progress.percent:.0f}%")
        cells: dict[str, RenderableType] = {"tries": f"{j.attempts}/{j.options.attempts}",
                                            "age": _ago(j.created_at, now),
                                            "error": Text(error_summary(j), STATE_COLOURS[j.state])}
        table.add_row(j.id, j.name, state, *(cells[name] for name in extra))
    return table


def _json_value(value: Any) -> RenderableType:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if len(text) <= SHOWN_CHARS:
        return JSON(text)
    return Text(text[:SHOWN_CHARS] + f"\n… {len(text) - SHOWN_CHARS:,} more characters (--json prints them all)")


def job_card(job: Job, now: float) -> Group:
    """Everything about one job, readably: fields, times in UTC with their age, payload, result, error, traceback
    and history."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    progress = f"{job.progress.percent:.0f}%" + (f" · {job.progress.message}" if job.progress.message else "")
    rows: list[tuple[str, RenderableType]] = [
        ("id", job.id), ("task", job.name), ("queue", job.queue), ("state", _state(job)),
        ("attempts", f"{job.attempts} of {job.options.attempts}" + (f", {job.stalls} stall(s)" if job.stalls else "")),
        ("priority", str(job.options.priority)), ("progress", progress),
        ("created", when(job.created_at, now)), ("started", when(job.started_at, now)),
        ("finished", when(job.finished_at, now)),
    ]
    if job.run_at > job.created_at and not job.finished:
        rows.append(("runs at", when(job.run_at, now)))
    if job.worker:
        rows.append(("worker", job.worker))
    if job.progress.extra:
        rows.append(("progress extra", _json_value(job.progress.extra)))
    rows.append(("payload", _json_value(job.data)))
    if job.result is not None or job.state is JobState.COMPLETED:
        rows.append(("result", _json_value(job.result)))
    if job.error:
        rows.append(("error", Text(job.error, STATE_COLOURS[job.state])))
    for key, value in rows:
        fields.add_row(key, value)
    parts: list[RenderableType] = [fields]
    if job.traceback:
        from rich.syntax import Syntax  # pygments' lexers: only for a traceback

        parts += [Text("\ntraceback", "bold"), Syntax(job.traceback.rstrip(), "pytb", word_wrap=True,
                                                      background_color="default")]
    if job.history:
        history = Table(title="history", title_style="bold", **_PLAIN)
        for name in ("when", "state", "attempt", "note"):
            history.add_column(name, overflow="fold")
        for h in job.history:
            history.add_row(when(h.at, now), Text(h.state.value, STATE_COLOURS[h.state]), str(h.attempt), h.note)
        parts += [Text(""), history]
    return Group(*parts)


def schedules_view(queue: str | None, found: Sequence[Schedule], n: int, now: float, width: int) -> Table | Text:
    """One row per schedule: its whole id, task, timing, its next `n` fire times in its own time zone (a paused
    one's as if resumed now) and, as the terminal's `width` allows, queue and the ticks fired and skipped."""
    if not found:
        where = f"queue {queue!r}" if queue else "any queue"
        return Text(f"no schedules in {where}; add one with Queue.schedule() or @jobkit.task(cron=...)", "dim")
    nexts = {s.id: [schedules.when(s, at) for at in schedules.upcoming(s, n, now)] for s in found}
    id_w = max(len(s.id) + (7 if s.paused else 0) for s in found)
    next_w = max(len(t) for times in nexts.values() for t in times)
    room = width - id_w - next_w - 8 - 14 - 8  # task and timing at their narrowest, and the gaps
    extra = [name for name, need in (("queue", 10), ("fired", 7), ("skipped", 9)) if (room := room - need) >= 0]
    table = Table(title=f"{len(found)} schedule(s)", **_PLAIN)
    table.add_column("schedule", no_wrap=True, min_width=id_w)
    if "queue" in extra:
        table.add_column("queue", overflow="fold", min_width=8)
    table.add_column("task", overflow="fold", min_width=8)
    table.add_column("timing", overflow="fold", min_width=14)
    table.add_column(f"next {n}", no_wrap=True, min_width=next_w)
    for name in ("fired", "skipped"):
        if name in extra:
            table.add_column(name, justify="right", no_wrap=True)
    for s in found:
        label = Text(s.id)
        if s.paused:
            label.append(" paused", "yellow")
        timing = f"cron {s.cron} {s.tz}" if s.cron is not None else f"every {s.every:g}s"
        cells: dict[str, RenderableType] = {"queue": s.queue, "fired": str(s.fired), "skipped": str(s.skipped)}
        row: list[RenderableType] = [label, *(cells[c] for c in extra if c == "queue"), s.task, timing,
                                     "\n".join(nexts[s.id]), *(cells[c] for c in extra if c != "queue")]
        table.add_row(*row)
    return table
