"""The parent of an aggregation: reads its children, merges their rows, totals per group, writes the destination.

It runs once its partitions have ended (all of them, or enough under continue_partial); the partitions that did
not complete are listed as missing, and running the same flow again recomputes only those.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ... import Context, JobState
from ..db import ColumnSpec, ErrorKinds, conflict_policy, open_writer, resolve_database
from ..db.writer import StateFn, TypeName
from .engines import open_engine
from .errors import AggregateSetupError
from .merge import MERGEABLE, merged_rows, merged_totals, spans
from .models import Aggregate, AggregateReport, PartitionResult, Span
from .sql import totals_sql

__all__ = ["merge_partitions"]

ERRORS = ErrorKinds(AggregateSetupError, AggregateSetupError)
BATCH = 5000


async def merge_partitions(ctx: Context, p: Aggregate) -> AggregateReport:
    if ctx.flow is None:
        raise AggregateSetupError("an aggregation runs as a flow, one child job per partition: start it with"
                                  " jobkit.jobs.aggregate_flow(payload)")
    started = time.monotonic()
    parts: list[PartitionResult] = []
    missing: list[Span] = []
    total = 0
    async for child in ctx.children():
        total += 1
        if child.state is JobState.COMPLETED and child.result is not None:
            parts.append(PartitionResult.model_validate(child.result))
        elif isinstance(child.data, dict):
            missing.append(Span(start=child.data["start"], end=child.data["end"]))
    await ctx.progress(10, f"merging {len(parts):,} of {total:,} partitions")
    rows = merged_rows(p, parts)
    columns = ["period", *p.group_by, *(m.out for m in p.metrics)]
    totals = await _totals(p, parts) if p.totals else None
    written = 0
    if p.destination is not None and rows:
        await ctx.progress(60, f"writing {len(rows):,} rows")
        written = await _write(ctx, p, columns, rows)
    engines = sorted({part.engine for part in parts})
    await ctx.progress(100, f"{len(rows):,} rows from {len(parts):,} of {total:,} partitions",
                       partitions=total, completed=len(parts), missing=len(missing))
    return AggregateReport(engine=", ".join(engines) or "none", partitions=total, completed=len(parts),
                           missing=sorted(missing, key=lambda s: s.start), columns=columns,
                           rows=rows if p.return_rows else None, row_count=len(rows), totals=totals,
                           destination=p.destination, rows_written=written,
                           duration_s=round(time.monotonic() - started, 3))


async def _totals(p: Aggregate, parts: Sequence[PartitionResult]) -> list[dict[str, Any]]:
    """One row per group over the completed partitions (see merge.py for how each metric gets there)."""
    groups = merged_totals(p, parts)
    exact = [m for m in p.metrics if m.fn not in MERGEABLE]
    if exact and parts:
        engine = open_engine(p)
        try:
            await engine.open()
            q = totals_sql(p, exact, engine.dialect, engine.source, engine.time, engine.columns, spans(parts))
            for row in await engine.rows(q):
                key = tuple(row[:len(p.group_by)])
                groups.setdefault(key, {}).update(zip((m.out for m in exact), row[len(p.group_by):], strict=True))
        finally:
            await engine.close()
    out = [{**dict(zip(p.group_by, key, strict=True)), **{m.out: acc.get(m.out) for m in p.metrics}}
           for key, acc in groups.items()]
    return sorted(out, key=lambda r: tuple("" if r[g] is None else str(r[g]) for g in p.group_by))


def _type_of(values: list[Any]) -> TypeName:
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, int):
        return "integer" if all(isinstance(v, int) or v is None for v in values) else "float"
    return "float" if isinstance(sample, float) else "text"


def _marker(rows: int) -> StateFn:
    return lambda _counts: {"rows": rows}


async def _write(ctx: Context, p: Aggregate, columns: list[str], rows: list[dict[str, Any]]) -> int:
    """Upsert the rows into the destination table, keyed by period and the group_by columns (created if missing)."""
    assert p.destination is not None and p.destination_table is not None
    db = resolve_database(p.destination, AggregateSetupError)
    key = ["period", *p.group_by]
    writer = open_writer(db, p.destination_table, conflict_policy("upsert", key, "last"), ERRORS)
    create = [ColumnSpec(c, "text" if c == "period" else _type_of([r[c] for r in rows])) for c in columns]
    try:
        await writer.open(columns, ctx.job_id, create)
        for i in range(0, len(rows), BATCH):
            converted, refused = writer.convert_many([tuple(r[c] for c in columns) for r in rows[i:i + BATCH]])
            if refused:
                at, why = refused[0]
                raise AggregateSetupError(f"row {i + at + 1} cannot be written into {p.destination_table!r}: {why}")
            await writer.write(converted, _marker(i + len(converted)))
    finally:
        await writer.close()
    return len(rows)
