"""How every view words a job: durations, elapsed time and ETA, attempts, errors and state colours."""

from __future__ import annotations

from collections.abc import Sequence

from ..models import Job, JobState

__all__ = ["BAR_STYLES", "STATE_COLOURS", "attempt_text", "duration", "elapsed", "error_summary", "eta", "latency",
           "retry_reason", "short_id", "sparkline", "timing_text"]

STATE_COLOURS = {
    JobState.WAITING: "#6b7280",
    JobState.DELAYED: "#b45309",
    JobState.WAITING_CHILDREN: "#6b7280",
    JobState.ACTIVE: "#2563eb",
    JobState.COMPLETED: "#15803d",
    JobState.FAILED: "#dc2626",
    JobState.CANCELLED: "#7c3aed",
}
#: ipywidgets' own bar styles, so bars follow the frontend's theme.
BAR_STYLES = {JobState.ACTIVE: "info", JobState.COMPLETED: "success", JobState.FAILED: "danger",
              JobState.CANCELLED: "warning"}


def short_id(job_id: str, n: int = 8) -> str:
    return job_id if len(job_id) <= n + 2 else job_id[:n]


def duration(seconds: float) -> str:
    """0.4s, 12s, 3m05s, 1h02m."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def latency(seconds: float | None) -> str:
    """A percentile of durations: <1ms, 3.7ms, 120ms, then as `duration`; '-' for none."""
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return "<1ms"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return duration(seconds)


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int]) -> str:
    """One block character per value, scaled to the largest (a space for zero)."""
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(" " if v <= 0 else _BARS[min(len(_BARS) - 1, (v * len(_BARS) - 1) // top)] for v in values)


def elapsed(job: Job, now: float) -> float | None:
    """Seconds the current (or last) attempt has run, None if it never started."""
    if job.started_at is None:
        return None
    end = job.finished_at if job.finished and job.finished_at else now
    return max(0.0, end - job.started_at)


def eta(job: Job, now: float) -> float | None:
    """Seconds left for an active job, extrapolated from its progress so far."""
    ran = elapsed(job, now)
    pct = job.progress.percent
    if job.state is not JobState.ACTIVE or ran is None or not 0 < pct < 100:
        return None
    return ran * (100 - pct) / pct


def attempt_text(job: Job) -> str:
    return f"attempt {job.attempts} of {job.options.attempts}" if job.attempts else ""


def timing_text(job: Job, now: float) -> str:
    """e.g. "elapsed 3.2s · ETA 4.0s · attempt 1 of 3"."""
    parts = []
    ran, left = elapsed(job, now), eta(job, now)
    if ran is not None:
        parts.append(f"{'took' if job.finished else 'elapsed'} {duration(ran)}")
    if left is not None:
        parts.append(f"ETA {duration(left)}")
    if job.attempts:
        parts.append(attempt_text(job))
    return " · ".join(parts)


def _last_line(text: str, limit: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= limit else last[: limit - 1] + "…"


def error_summary(job: Job, limit: int = 160) -> str:
    """The last line of the job's error (the exception itself), cut to `limit` characters."""
    return _last_line(job.error, limit) if job.error else ""


_RETRYING = (JobState.WAITING, JobState.DELAYED)


def retry_reason(job: Job, limit: int = 160) -> str:
    """Why the job is on a retry (or got to its result through one): "attempt 1 failed: ValueError: …", else "".

    Read from the job's history (the error of each failed attempt is noted there), so a bar that starts again
    from zero says why; a retry asked for by a person starts the story afresh.
    """
    for entry in reversed(job.history):
        if entry.state in _RETRYING and entry.attempt == 0:
            break  # added, or reset by a person's retry: nothing failed since
        if entry.state in _RETRYING and entry.note:
            return f"attempt {entry.attempt} failed: {_last_line(entry.note, limit)}"
    if job.state in (*_RETRYING, JobState.ACTIVE) and job.attempts and job.error:  # history trimmed or absent
        failed = job.attempts - (job.state is JobState.ACTIVE)
        return f"attempt {failed} failed: {error_summary(job, limit)}"
    return ""
