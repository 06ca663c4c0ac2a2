"""`jobkit.jobs.db_insert`: the built-in task that inserts rows into a SQLite or PostgreSQL table."""

from __future__ import annotations

from ... import Context, task
from .._policy import ATTEMPTS, BACKOFF
from .inserter import Inserter
from .models import DbInsert, InsertReport

__all__ = ["db_insert"]


@task(name="jobkit.jobs.db_insert", queue="default", attempts=ATTEMPTS, backoff=BACKOFF)
async def db_insert(ctx: Context, payload: DbInsert) -> InsertReport:
    """Insert the payload's rows (or a file's, or another job's result) into `payload.table`, resolving key
    conflicts by `on_conflict`; resumes after the last committed batch (see docs/db_insert.md)."""
    return await Inserter(ctx, payload).run()
