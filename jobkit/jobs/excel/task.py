"""`jobkit.jobs.excel_import`: the built-in task that imports one sheet of an .xlsx into a destination."""

from __future__ import annotations

from ... import Context, task
from .._policy import ATTEMPTS, BACKOFF
from .importer import Importer
from .models import ExcelImport, ImportReport

__all__ = ["excel_import"]


@task(name="jobkit.jobs.excel_import", queue="default", attempts=ATTEMPTS, backoff=BACKOFF)
async def excel_import(ctx: Context, payload: ExcelImport) -> ImportReport:
    """Import `payload.sheet` of `payload.path` into `payload.destination`, row by row through `row_model`.

    Resumes after the last committed batch on a retry; a bad file fails at once with a message saying
    what is wrong with it (see docs/excel_import.md).
    """
    return await Importer(ctx, payload).run()
