"""One child of an aggregation: its partition's rows, read in one query, saved as its checkpoint before it ends.

A retry after the rows were saved (a lost lease, a crash before the job completed) returns them without reading
the source again; a re-run of the flow leaves a completed partition alone.
"""

from __future__ import annotations

import time

from ... import Context
from .calendar import cuts
from .engines import open_engine
from .models import MAX_BUCKETS, Partition, PartitionResult
from .sql import hidden_columns, partition_sql

__all__ = ["compute_partition"]


async def compute_partition(ctx: Context, payload: Partition) -> PartitionResult:
    if ctx.checkpoint:
        return PartitionResult.model_validate(ctx.checkpoint)
    p, started = payload.aggregate, time.monotonic()
    edges = cuts(payload.start, payload.end, p.period, p.tz, MAX_BUCKETS)
    label = f"{edges[0]:%Y-%m-%d %H:%M} to {edges[-1]:%Y-%m-%d %H:%M}"
    engine = open_engine(p)
    await ctx.progress(0, f"reading {label}")
    try:
        await engine.open()
        rows = await engine.rows(partition_sql(p, engine.dialect, engine.source, engine.time, engine.columns, edges))
    finally:
        await engine.close()
    periods = [t.isoformat() for t in edges]
    for row in rows:
        row[0] = periods[row[0]]
    columns = ["period", *p.group_by, *(m.out for m in p.metrics), *(n for n, _, _ in hidden_columns(p.metrics))]
    result = PartitionResult(engine=engine.name, start=payload.start, end=payload.end, columns=columns, rows=rows,
                             duration_s=round(time.monotonic() - started, 3))
    await ctx.save_checkpoint(result.model_dump(mode="json"))
    await ctx.progress(100, f"{label}: {len(rows):,} rows", rows=len(rows))
    return result
