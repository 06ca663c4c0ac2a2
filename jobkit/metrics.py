"""Job metrics read back: completed and failed jobs per minute, success rate, wait and run time percentiles.

The finish transition counts them (see backends/_metrics.py); this module turns a backend's rows into `Metrics`,
for `Queue.metrics()`, `jobkit status`, the notebook dashboard and `collect_metrics()` (a Prometheus exporter's
source).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, computed_field

from .backends import Backend
from .backends._metrics import KEPT_MINUTES, MetricRow, bucket_value, parse
from .config import BackendLike, get_backend
from .errors import ConfigError

__all__ = ["Metrics", "Percentiles", "collect_metrics", "since_time", "summarize"]

Since = datetime | timedelta | float | None
DEFAULT_SPAN = timedelta(hours=1)


class Percentiles(BaseModel):
    """Durations in seconds at the 50th, 95th and 99th percentiles of `count` jobs (None without any), each within
    9% of the true value (read from a histogram whose buckets grow by 2^(1/4) from 1 ms)."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Metrics(BaseModel):
    """A queue's (or one of its tasks') jobs that completed and failed in each minute from `start` through the
    current one, and how long they waited (from due to started) and ran (from started to finished)."""

    queue: str
    task: str | None = None  # None: every task of the queue
    start: float  # epoch seconds at which the first minute of `completed` and `failed` begins
    completed: list[int]
    failed: list[int]
    wait: Percentiles
    run: Percentiles
    tasks: list[str]  # the tasks with jobs in the span, sorted

    @computed_field  # type: ignore[prop-decorator]
    @property
    def completed_total(self) -> int:
        return sum(self.completed)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed_total(self) -> int:
        return sum(self.failed)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_rate(self) -> float | None:
        """Completed jobs as a share of those that finished (completed or failed); None when none did."""
        done = self.completed_total + self.failed_total
        return None if done == 0 else self.completed_total / done

    def per_minute(self, last: int = 5) -> float:
        """Jobs finished (completed or failed) per minute over the last `last` minutes of the series."""
        last = max(1, min(last, len(self.completed)))
        return (sum(self.completed[-last:]) + sum(self.failed[-last:])) / last


def since_time(since: Since, now: float) -> float:
    """Epoch seconds for a `since=`: a datetime, a timedelta back from now, epoch seconds, or None (an hour ago);
    never earlier than the metrics kept."""
    if since is None:
        since = DEFAULT_SPAN
    if isinstance(since, timedelta):
        at = now - since.total_seconds()
    elif isinstance(since, datetime):
        if since.tzinfo is None:
            raise ConfigError(f"since={since!r} has no time zone: give an aware datetime (tzinfo=timezone.utc)")
        at = since.timestamp()
    elif isinstance(since, int | float) and not isinstance(since, bool) and math.isfinite(since):
        at = float(since)
    else:
        raise ConfigError(f"since must be a datetime, a timedelta (that long ago) or epoch seconds, not {since!r}")
    return max(at, (now // 60 - KEPT_MINUTES + 1) * 60)


def _percentiles(histogram: dict[int, int]) -> Percentiles:
    total = sum(histogram.values())
    if not total:
        return Percentiles()
    found: dict[float, float] = {}
    seen = 0
    wanted = iter((0.5, 0.95, 0.99))
    q = next(wanted, None)
    for b in sorted(histogram):
        seen += histogram[b]
        while q is not None and seen >= math.ceil(q * total):
            found[q] = bucket_value(b)
            q = next(wanted, None)
    return Percentiles(count=total, p50=found[0.5], p95=found[0.95], p99=found[0.99])


def summarize(queue: str, rows: Iterable[MetricRow], since: float, now: float, task: str | None = None) -> Metrics:
    """The `Metrics` of `queue` (or of its `task`) from its rows, minute by minute from `since` through `now`."""
    first, last = int(since // 60), int(now // 60)
    completed, failed = [0] * (last - first + 1), [0] * (last - first + 1)
    wait: dict[int, int] = {}
    run: dict[int, int] = {}
    tasks: set[str] = set()
    for minute, name, field, n in rows:
        if not first <= minute <= last or (task is not None and name != task):
            continue
        tasks.add(name)
        state, w, r = parse(field)
        (completed if state == "c" else failed)[minute - first] += n
        wait[w] = wait.get(w, 0) + n
        run[r] = run.get(r, 0) + n
    return Metrics(queue=queue, task=task, start=first * 60.0, completed=completed, failed=failed,
                   wait=_percentiles(wait), run=_percentiles(run), tasks=sorted(tasks))


async def collect_metrics(
    queues: Sequence[str] | None = None, *, since: Since = timedelta(minutes=5), backend: BackendLike = None,
) -> list[Metrics]:
    """Every queue's metrics (or those of `queues`): for each, its totals (task None), then one per task, by name.
    What a Prometheus exporter reads on a scrape (see docs/metrics.md)."""
    b: Backend = await get_backend(backend)
    now = time.time()
    start = since_time(since, now)
    out: list[Metrics] = []
    for queue in queues if queues is not None else await b.queues():
        rows = await b.metrics(queue, start)
        total = summarize(queue, rows, start, now)
        out.append(total)
        out.extend(summarize(queue, rows, start, now, task=name) for name in total.tasks)
    return out
