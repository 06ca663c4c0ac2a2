"""`jobkit.jobs.export`: the built-in task that streams a table or query into a new .xlsx, .csv or .jsonl file."""

from __future__ import annotations

from ... import Context, task
from .._policy import ATTEMPTS, BACKOFF
from .exporter import Exporter
from .models import Export, ExportResult

__all__ = ["export"]


@task(name="jobkit.jobs.export", queue="default", attempts=ATTEMPTS, backoff=BACKOFF)
async def export(ctx: Context, payload: Export) -> ExportResult:
    """Export `payload.table` (or a registered query) into a new file inside the file roots; the result names the
    file, its rows and its SHA-256 (see docs/export.md)."""
    return await Exporter(ctx, payload).run()
