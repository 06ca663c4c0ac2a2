"""`jobkit.jobs.aggregate`: the parent task of an aggregation flow, its partition task, and `aggregate_flow`,
which adds the flow with job ids derived from the payload (the same call again recomputes only what is missing)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from pydantic import ValidationError

from ... import Context, ContinuePartial, JobHandle, PayloadError, flow, task
from ...config import BackendLike
from .._policy import ATTEMPTS, BACKOFF
from .models import Aggregate, AggregateReport, Partition, PartitionResult
from .parent import merge_partitions
from .partition import compute_partition

__all__ = ["aggregate", "aggregate_flow", "aggregate_partition", "flow_id"]


@task(name="jobkit.jobs.aggregate_partition", queue="default", attempts=ATTEMPTS, backoff=BACKOFF)
async def aggregate_partition(ctx: Context, payload: Partition) -> PartitionResult:
    """One partition's rows (a child of `aggregate`)."""
    return await compute_partition(ctx, payload)


@task(name="jobkit.jobs.aggregate", queue="default", attempts=ATTEMPTS, backoff=BACKOFF)
async def aggregate(ctx: Context, payload: Aggregate) -> AggregateReport:
    """Merge the partitions' rows into the report and the destination table (see docs/analytics.md)."""
    return await merge_partitions(ctx, payload)


def flow_id(payload: Aggregate) -> str:
    """The parent's job id: a digest of the payload, so the same aggregation is the same flow."""
    text = json.dumps(payload.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "aggregate-" + hashlib.sha256(text.encode()).hexdigest()[:20]


async def aggregate_flow(payload: Aggregate | dict[str, Any], *, backend: BackendLike = None,
                         queue: str | None = None, priority: int | None = None) -> JobHandle[AggregateReport]:
    """Add the aggregation as a flow (one child per partition, the parent merges) and return the parent's handle.

    Job ids come from the payload and each partition's range: calling it again with the same payload re-runs
    only the partitions that failed or are missing, then merges again (or returns the completed flow as it is)."""
    try:
        p = Aggregate.model_validate(payload)
    except ValidationError as exc:
        raise PayloadError(f"invalid payload for task {aggregate.name!r}: {exc}; nothing was queued") from exc
    parent = flow_id(p)
    data = p.model_dump(mode="json")
    options: dict[str, Any] = {} if queue is None else {"queue": queue}
    if priority is not None:
        options["priority"] = priority
    children = [(aggregate_partition, {"aggregate": data, "start": start.isoformat(), "end": end.isoformat()},
                 {"job_id": f"{parent}-{start.astimezone(dt.timezone.utc):%Y%m%dT%H%MZ}", **options})
                for start, end in p.partitions()]
    policy = ContinuePartial(max_failed=p.max_failed) if p.policy == "continue_partial" else p.policy
    handle: JobHandle[AggregateReport] = await flow(aggregate, data, children=children, policy=policy,
                                                    job_id=parent, queue=queue, backend=backend, **(
                                                        {} if priority is None else {"priority": priority}))
    return handle
