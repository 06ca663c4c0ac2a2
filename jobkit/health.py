"""`health()`: one verdict (healthy, degraded, unhealthy) on a backend, for `/health`, `jobkit status --json` and code.

The verdict comes from measured facts (backend latency, workers alive, the oldest waiting job's age, failures in
the last minute) held against thresholds, so the HTTP API, the CLI and a Python caller can never disagree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .backends import Backend
from .config import BackendLike, get_backend
from .errors import JobkitError
from .metrics import summarize
from .models import JobState, QueueCounts
from .spool import spool_size

__all__ = ["HealthReport", "HealthThresholds", "QueueHealth", "health"]

Verdict = Literal["healthy", "degraded", "unhealthy"]
_RANK: dict[Verdict, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}
FAILURE_WINDOW = 300.0  # seconds of finish counts behind "failures per minute" (whole minutes: up to 6)


class HealthThresholds(BaseModel):
    """Where each measure turns the verdict degraded or unhealthy (None: that measure never does)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    latency_degraded: float | None = Field(default=0.25, gt=0, description="seconds for one backend round trip")
    latency_unhealthy: float | None = Field(default=2.0, gt=0)
    waiting_age_degraded: float | None = Field(default=300.0, gt=0, description="seconds the oldest job waited")
    waiting_age_unhealthy: float | None = Field(default=3600.0, gt=0)
    failures_per_minute_degraded: float | None = Field(default=10.0, ge=0)
    failures_per_minute_unhealthy: float | None = Field(default=100.0, ge=0)
    no_worker: Verdict = Field(default="degraded", description="the verdict when jobs wait and no worker is alive")


class QueueHealth(BaseModel):
    """One queue's part of the report."""

    counts: QueueCounts
    workers: int
    oldest_waiting_age: float | None = None
    failures_per_minute: float = 0.0


class HealthReport(BaseModel):
    """The verdict and the facts it rests on; `problems` says which threshold each non-healthy verdict crossed."""

    status: Verdict
    backend_reachable: bool
    latency: float | None = None
    workers: int = 0
    queues: dict[str, QueueHealth] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)
    spooled: int = Field(default=0, description="jobs in the local spool waiting for their Redis (degrade='spool')")
    checked_at: float = Field(default_factory=time.time)

    @property
    def http_status(self) -> int:
        """200 while it serves (healthy or degraded), 503 when unhealthy."""
        return 503 if self.status == "unhealthy" else 200


#: Extra checks (a spool that is not empty, say) that add problems: each returns (verdict, reason) or None.
ExtraCheck = Callable[[], Awaitable[tuple[Verdict, str] | None]]


def _grade(value: float | None, degraded: float | None, unhealthy: float | None) -> Verdict:
    if value is None:
        return "healthy"
    if unhealthy is not None and value >= unhealthy:
        return "unhealthy"
    if degraded is not None and value >= degraded:
        return "degraded"
    return "healthy"


async def _oldest_waiting_age(backend: Backend, queue: str, counts: QueueCounts, now: float) -> float | None:
    if not counts.waiting:
        return None
    oldest = await backend.list(queue, states={JobState.WAITING}, offset=counts.waiting - 1, limit=1)
    return max(0.0, now - oldest[0].created_at) if oldest else None


async def _failures_per_minute(backend: Backend, queue: str, now: float) -> float:
    """Jobs failed per minute over the last few minutes, from the counts the finish transition keeps."""
    start = now - FAILURE_WINDOW
    counted = summarize(queue, await backend.metrics(queue, start), start, now)
    return counted.failed_total / max(1.0, (now - counted.start) / 60)


async def _queue_health(backend: Backend, queue: str, live_queues: dict[str, int], now: float) -> QueueHealth:
    counts = await backend.counts(queue)
    age, failures = await asyncio.gather(_oldest_waiting_age(backend, queue, counts, now),
                                         _failures_per_minute(backend, queue, now))
    return QueueHealth(counts=counts, workers=live_queues.get(queue, 0), oldest_waiting_age=age,
                       failures_per_minute=failures)


def _judge(report: HealthReport, t: HealthThresholds) -> None:
    """Set `report.status` to the worst verdict of its measures, listing each crossed threshold."""
    found: list[tuple[Verdict, str]] = [(_grade(report.latency, t.latency_degraded, t.latency_unhealthy),
                                         f"backend latency {report.latency or 0:.3f} s")]
    for name, q in report.queues.items():
        found.append((_grade(q.oldest_waiting_age, t.waiting_age_degraded, t.waiting_age_unhealthy),
                      f"queue {name!r}: oldest waiting job {q.oldest_waiting_age or 0:.0f} s old"))
        found.append((_grade(q.failures_per_minute, t.failures_per_minute_degraded, t.failures_per_minute_unhealthy),
                      f"queue {name!r}: {q.failures_per_minute:.1f} failures per minute"))
        if q.counts.waiting and not q.workers and not q.counts.paused:
            found.append((t.no_worker, f"queue {name!r}: {q.counts.waiting} job(s) waiting and no worker alive"))
    for verdict, reason in found:
        if verdict != "healthy":
            report.problems.append(f"{verdict}: {reason}")
            if _RANK[verdict] > _RANK[report.status]:
                report.status = verdict


async def health(
    backend: BackendLike = None, *, thresholds: HealthThresholds | None = None, queues: list[str] | None = None,
    extra: Sequence[ExtraCheck] = (),
) -> HealthReport:
    """Check `backend` (default: the process's) and its queues (default: every queue), and judge them; jobs
    waiting in the local spool (`jobkit.spool_size()`) make it degraded at least.

    An unreachable backend is `unhealthy`, never an exception."""
    t = thresholds or HealthThresholds()
    spooled = await asyncio.to_thread(spool_size)
    try:
        b = await get_backend(backend)
        now, started = time.time(), time.perf_counter()
        names = await b.queues()  # one round trip, timed
        latency = time.perf_counter() - started
        if queues is not None:
            names = queues
        workers = await b.workers(now)
        live: dict[str, int] = {}
        for w in workers:
            for q in w.queues:
                live[q] = live.get(q, 0) + 1
        per_queue = await asyncio.gather(*(_queue_health(b, q, live, now) for q in names))
    except (JobkitError, OSError) as exc:
        return HealthReport(status="unhealthy", backend_reachable=False, spooled=spooled,
                            problems=[f"unhealthy: backend: {exc}"])
    report = HealthReport(status="healthy", backend_reachable=True, latency=latency, workers=len(workers),
                          queues=dict(zip(names, per_queue, strict=True)), spooled=spooled)
    _judge(report, t)
    if spooled:
        report.problems.append(f"degraded: {spooled} job(s) in the local spool wait for their Redis"
                               " (`jobkit spool flush`)")
        report.status = "unhealthy" if report.status == "unhealthy" else "degraded"
    for check in extra:
        found = await check()
        if found is not None:
            report.problems.append(f"{found[0]}: {found[1]}")
            if _RANK[found[0]] > _RANK[report.status]:
                report.status = found[0]
    return report
