"""GET /health (the verdict for anyone; the facts behind it for a token) and GET /metrics (Prometheus, admin)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..health import HealthReport, health
from ..metrics import Metrics, collect_metrics
from ._auth import principal
from ._scope import queue_names
from ._state import state

__all__ = ["routes"]

SPAN_MINUTES = 5  # minutes of finish counts behind /metrics' recent figures


async def check(request: Request) -> HealthReport:
    s = state(request)
    return await health(s.backend, thresholds=s.config.health, queues=await queue_names(s.backend))


async def get_health(request: Request) -> Response:
    report = await check(request)
    try:
        await principal(request)
    except HTTPException:  # anyone may ask whether it serves; only callers with a token see why
        return JSONResponse({"status": report.status}, status_code=report.http_status)
    return JSONResponse(report.model_dump(mode="json", by_alias=True), status_code=report.http_status)


class _Snapshot(Collector):
    """The report's figures as Prometheus gauges, read once per scrape."""

    def __init__(self, report: HealthReport, metrics: list[Metrics]) -> None:
        self.report, self.metrics = report, metrics

    def collect(self) -> Iterator[Metric]:
        r = self.report
        up = GaugeMetricFamily("jobkit_up", "1 when the backend answered, else 0")
        up.add_metric([], 1.0 if r.backend_reachable else 0.0)
        status = GaugeMetricFamily("jobkit_health", "1 for the current verdict", labels=["status"])
        for verdict in ("healthy", "degraded", "unhealthy"):
            status.add_metric([verdict], 1.0 if r.status == verdict else 0.0)
        latency = GaugeMetricFamily("jobkit_backend_latency_seconds", "one backend round trip")
        latency.add_metric([], r.latency or 0.0)
        jobs = GaugeMetricFamily("jobkit_jobs", "jobs per queue and state", labels=["queue", "state"])
        paused = GaugeMetricFamily("jobkit_queue_paused", "1 when the queue is paused", labels=["queue"])
        workers = GaugeMetricFamily("jobkit_workers", "live workers serving the queue", labels=["queue"])
        age = GaugeMetricFamily("jobkit_oldest_waiting_seconds", "age of the oldest waiting job", labels=["queue"])
        failures = GaugeMetricFamily("jobkit_failures_per_minute", "jobs failed in the last minute", labels=["queue"])
        for name, q in r.queues.items():
            for st, n in q.counts.model_dump(by_alias=True, exclude={"paused"}).items():
                jobs.add_metric([name, st], float(n))
            paused.add_metric([name], 1.0 if q.counts.paused else 0.0)
            workers.add_metric([name], float(q.workers))
            age.add_metric([name], q.oldest_waiting_age or 0.0)
            failures.add_metric([name], q.failures_per_minute)
        yield from (up, status, latency, jobs, paused, workers, age, failures, *self._finished())

    def _finished(self) -> Iterator[Metric]:
        """Jobs finished in the last minutes, and their wait and run time percentiles, per queue and task (task ""
        for the whole queue), from the counts the finish transition keeps."""
        labels = ["queue", "task"]
        done = GaugeMetricFamily("jobkit_finished_recent", f"jobs finished in the last {SPAN_MINUTES} minutes",
                                 labels=[*labels, "state"])
        times = {kind: GaugeMetricFamily(f"jobkit_{kind}_seconds", f"{kind} time of jobs finished in the last"
                                         f" {SPAN_MINUTES} minutes", labels=[*labels, "quantile"])
                 for kind in ("wait", "run")}
        for m in self.metrics:
            key = [m.queue, m.task or ""]
            done.add_metric([*key, "completed"], float(m.completed_total))
            done.add_metric([*key, "failed"], float(m.failed_total))
            for kind, p in (("wait", m.wait), ("run", m.run)):
                for quantile, value in (("0.5", p.p50), ("0.95", p.p95), ("0.99", p.p99)):
                    if value is not None:
                        times[kind].add_metric([*key, quantile], value)
        yield from (done, *times.values())


async def metrics(request: Request) -> Response:
    await principal(request, admin=True)
    registry = CollectorRegistry(auto_describe=False)
    s = state(request)
    report = await check(request)
    recent = await collect_metrics(list(report.queues), since=timedelta(minutes=SPAN_MINUTES), backend=s.backend)
    registry.register(_Snapshot(report, recent))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", get_health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
