"""The public surface of jobkit.jobs, and a user-registered destination kind."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import Destination

from .excel_helpers import customer_rows, write_book


def test_public_names() -> None:
    assert jobkit.jobs.__all__ == [
        "AIBatch", "AIGenerate", "Aggregate", "AggregateReport", "AggregateSetupError", "Attachment", "BatchReport",
        "CacheSink", "CacheWarm", "CacheWarmReport", "CacheWarmSetupError", "DbInsert", "Destination",
        "DestinationFactory", "EmailReport", "EmailSetupError", "ExcelImport", "Export", "ExportResult",
        "ExportSetupError", "GenerateResult", "ImportReport", "ImportSetupError", "InsertRejected", "InsertReport",
        "InsertSetupError", "Limits", "Recipient", "RecipientOutcome", "RowError", "RowsRejected", "SendEmail",
        "Upsert", "WorkbookError", "aggregate", "aggregate_flow", "aggregate_partition", "ai_batch", "ai_generate",
        "cache_warm", "configure", "db_insert", "excel_import", "export", "file_roots", "register_cache",
        "register_cache_warmer", "register_database", "register_destination", "register_email_templates",
        "register_python_destination", "register_query", "register_row_model", "register_smtp_server", "send_email",
    ]
    assert all(hasattr(jobkit.jobs, name) for name in jobkit.jobs.__all__)
    assert issubclass(jobkit.jobs.WorkbookError, jobkit.Unrecoverable)
    for error in ("InsertRejected", "InsertSetupError", "ExportSetupError", "CacheWarmSetupError",
                  "AggregateSetupError"):
        assert issubclass(getattr(jobkit.jobs, error), jobkit.Unrecoverable)
    assert jobkit.jobs.__all__ == sorted(jobkit.jobs.__all__)


def test_built_in_jobs_retry_as_production_does() -> None:
    """3 attempts, 5 s then 15 s apart, for every built-in job that commits or spends (the AI jobs wait 10 s)."""
    jobs = [jobkit.jobs.excel_import, jobkit.jobs.db_insert, jobkit.jobs.export, jobkit.jobs.cache_warm,
            jobkit.jobs.send_email, jobkit.jobs.aggregate, jobkit.jobs.aggregate_partition]
    for t in jobs:
        assert t.options.attempts == 3, t.name
        assert [t.options.backoff.seconds(n) for n in (1, 2)] == [5.0, 15.0], t.name


class ListDestination(Destination):
    """Keeps rows and the import's state together, as a transactional store would."""

    tables: ClassVar[dict[str, tuple[list[BaseModel], dict[str, Any] | None]]] = {}

    def __init__(self, url: str) -> None:
        self.name = url.split(":", 1)[1]

    async def open(self, model: type[BaseModel], job_id: str) -> dict[str, Any] | None:
        self.tables.setdefault(self.name, ([], None))
        return self.tables[self.name][1]

    async def write(self, rows: Sequence[BaseModel], state: dict[str, Any]) -> None:
        kept, _ = self.tables[self.name]
        self.tables[self.name] = ([*kept, *rows], state)


async def test_registered_destination_kind(memory: Backend, tmp_path: Path) -> None:
    jobkit.jobs.register_destination("list", ListDestination)
    src = write_book(tmp_path / "l.xlsx", customer_rows(25))
    report = await jobkit.run(jobkit.jobs.excel_import, {
        "path": str(src), "row_model": "Customer", "destination": "list:people", "batch_size": 10},
        backend=memory, timeout=30)
    rows, state = ListDestination.tables["people"]
    assert report.rows_imported == 25 and [r.id for r in rows] == list(range(1, 26))  # type: ignore[attr-defined]
    assert state is not None and state["next_row"] == 27 and state["batches"] == 3


async def test_header_only_sheet_imports_nothing(memory: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "h.xlsx", [])
    report = await jobkit.run(jobkit.jobs.excel_import, {
        "path": str(src), "row_model": "Customer", "destination": f"sqlite:///{tmp_path / 'w.db'}?table=t"},
        backend=memory, timeout=30)
    assert (report.rows_read, report.rows_imported) == (0, 0)
