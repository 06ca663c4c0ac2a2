"""The DB insert's payload (`DbInsert`), its result (`InsertReport`) and the state a resumed attempt continues from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..db.conflicts import Duplicates, OnConflict
from ..excel.models import RowError

__all__ = ["BATCHES_KEPT", "ERRORS_KEPT", "BatchReport", "DbInsert", "InsertReport", "InsertState", "ResultOf"]

ERRORS_KEPT = 1000  # row errors kept in the report
BATCHES_KEPT = 200  # per-batch counts kept in the report: the latest (the totals count every batch)


class ResultOf(BaseModel):
    """Rows from another job's result: a list of objects, or an object whose `rows` is one."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1)
    queue: str = "default"


class DbInsert(BaseModel):
    """Insert rows into a table of a SQLite or PostgreSQL database, resolving key conflicts, in committed batches."""

    model_config = ConfigDict(extra="forbid")

    destination: str = Field(description="a database the worker registered ('warehouse', 'postgresql://warehouse'),"
                             " or 'sqlite:///file.db' inside the file roots")
    table: str = Field(min_length=1, description="the table ('schema.table' on PostgreSQL); it must exist")
    rows: list[dict[str, Any]] | None = Field(default=None, description="the rows themselves")
    path: str | None = Field(default=None, description="a .jsonl/.ndjson or .csv file inside the file roots")
    result_of: ResultOf | None = Field(default=None, description="another job's result")
    columns: list[str] | None = Field(default=None, min_length=1, description="columns written; default: the first"
                                      " row's keys (a CSV file's header; a row model's fields)")
    key: list[str] | None = Field(default=None, min_length=1, description="the unique key conflicts are judged by;"
                                  " default: the table's primary key")
    on_conflict: OnConflict = Field(default="error", description="'error', 'skip', 'upsert', or {'upsert': [columns]}")
    duplicates: Duplicates | None = Field(default=None, description="rows sharing a key in one batch: 'first',"
                                          " 'last' or 'error'; default: as if written one by one")
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="rows per transaction and checkpoint")
    row_model: str | None = Field(default=None, description="a model registered with register_row_model that every"
                                  " row must pass")
    on_error: Literal["skip", "fail"] = Field(default="fail", description="rows that do not fit their columns")
    max_errors: int = Field(default=1000, ge=0, description="bad rows tolerated by on_error='skip'")

    @model_validator(mode="after")
    def _one_source(self) -> DbInsert:
        given = [n for n in ("rows", "path", "result_of") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one source of rows: rows=[...], path='file.jsonl' or result_of={'job_id':"
                             f" ...}} (given: {', '.join(given) or 'none'})")
        return self


class BatchReport(BaseModel):
    """What one committed batch did: the source rows it covered and its counts."""

    batch: int
    first_row: int
    last_row: int
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    duplicates: int = 0
    rejected: int = 0


class InsertReport(BaseModel):
    """What an insert did, across all attempts. `updated` counts rows whose values changed; `skipped` conflicting
    rows left as stored; `duplicates` rows dropped for repeating a key within their batch."""

    destination: str
    table: str
    source: str
    key: list[str]
    on_conflict: str
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    batch_counts: list[BatchReport] = Field(default_factory=list)
    errors: list[RowError] = Field(default_factory=list)
    duration_s: float = 0.0
    attempts: int = 1


class InsertState(BaseModel):
    """The checkpoint, also committed with each batch as the destination's marker."""

    next_row: int = 0  # source rows handled (committed or rejected)
    offset: int = 0  # a file's byte offset after those rows
    fingerprint: str = ""  # a file's size and modification time: a changed file cannot be resumed
    columns: list[str] = Field(default_factory=list)
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    batch_counts: list[BatchReport] = Field(default_factory=list)
    errors: list[RowError] = Field(default_factory=list)
