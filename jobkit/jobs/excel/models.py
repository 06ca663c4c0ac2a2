"""The import's payload (`ExcelImport`), its safety limits, and its result (`ImportReport`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..db.conflicts import BatchCounts, Duplicates, OnConflict

__all__ = [
    "ERRORS_KEPT", "ExcelImport", "ImportReport", "ImportState", "Limits", "RejectedRow", "RowError", "with_counts",
]

ERRORS_KEPT = 1000  # row errors kept in the report (and rejected rows in the error file)
MB = 1024 * 1024


class Limits(BaseModel):
    """What a workbook may declare or expand to before it is refused as hostile or absurd."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_mb: float = Field(default=1024, gt=0, description="size of the .xlsx file itself")
    max_uncompressed_mb: float = Field(default=4096, gt=0, description="all parts together, once unzipped")
    max_ratio: float = Field(default=200, gt=1, description="unzipped/zipped size of a part over 1 MB")
    max_parts: int = Field(default=10_000, gt=0, description="files inside the zip")
    max_shared_strings_mb: float = Field(default=512, gt=0, description="the shared string table, unzipped")


class ExcelImport(BaseModel):
    """Import one sheet of an .xlsx workbook into a destination, validating each row with a pydantic model."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the .xlsx file, inside the worker's file roots (relative: in the first root)")
    sheet: str | int = Field(default=0, description="sheet name, or 0-based index")
    header_row: int | None = Field(default=None, ge=1, description="sheet row of the header; None: first non-empty")
    columns: dict[str, str] = Field(default_factory=dict, description="sheet header -> row model field")
    row_model: str = Field(description="a model registered with register_row_model: its name or 'module:Model'")
    destination: str = Field(description="'sqlite:///file.db?table=name', 'postgresql://warehouse?table=name' (a"
                             " registered database), 'python:name' (a registered function), or a registered kind")
    on_conflict: OnConflict = Field(default="error", description="a row whose key a table row holds: 'error', 'skip',"
                                    " 'upsert', or {'upsert': [columns]} (table destinations)")
    key: list[str] | None = Field(default=None, min_length=1, description="the key conflicts are judged by; default:"
                                  " the table's primary key (a table created from the row model gets this one)")
    duplicates: Duplicates | None = Field(default=None, description="rows sharing a key in one batch: 'first', 'last'"
                                          " or 'error'; default: as if written one by one")
    batch_size: int = Field(default=500, ge=1, le=100_000)
    on_error: Literal["skip", "fail"] = "skip"
    max_errors: int = Field(default=1000, ge=0, description="rejected rows tolerated by on_error='skip'")
    error_file: bool | str = Field(default=False, description="True: <name>.errors.xlsx beside the source; or a new"
                                   " .xlsx path inside the file roots")
    limits: Limits = Field(default_factory=Limits)

    @field_validator("destination")
    @classmethod
    def _has_scheme(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("a destination is a URL: 'sqlite:///file.db?table=name' or 'python:name'")
        return v

    @field_validator("row_model")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name a row model registered with jobkit.jobs.register_row_model")
        return v.strip()


class RowError(BaseModel):
    """One problem in one row: where (sheet row, column header) and what."""

    row: int = Field(description="1-based row number in the sheet, as Excel shows it")
    column: str | None = Field(default=None, description="the column's header in the sheet")
    field: str | None = Field(default=None, description="the row model's field")
    message: str
    value: Any = None


class ImportReport(BaseModel):
    """What an import did. `errors` holds the first 1,000 row errors."""

    path: str
    sheet: str
    destination: str
    rows_read: int = 0
    rows_imported: int = 0
    rows_rejected: int = 0
    blank_rows: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_skipped: int = 0
    rows_duplicates: int = 0
    duration_s: float = 0.0
    attempts: int = 1
    errors: list[RowError] = Field(default_factory=list)
    error_file: str | None = None


class RejectedRow(BaseModel):
    """A rejected row as the error file shows it: its cells (one per header) and why it was refused."""

    row: int
    values: list[Any]
    reason: str


class ImportState(BaseModel):
    """Everything a later attempt needs to resume: the checkpoint, and the destination's marker."""

    next_row: int = 0  # first sheet row not yet handled; 0 before the first batch
    rows_read: int = 0
    rows_imported: int = 0
    rows_rejected: int = 0
    blank_rows: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_skipped: int = 0
    rows_duplicates: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    fingerprint: str = ""  # size and modification time of the source: a changed file cannot be resumed
    error_file: str = ""  # the error file this job created: a retry may rewrite it, and no other file
    errors: list[RowError] = Field(default_factory=list)
    rejected: list[RejectedRow] = Field(default_factory=list)


def with_counts(state: ImportState, counts: BatchCounts) -> ImportState:
    """`state` once a batch with these counts is in (what the destination commits with it, and the checkpoint)."""
    new = state.model_copy(deep=True)
    new.rows_inserted += counts.inserted
    new.rows_updated += counts.updated
    new.rows_skipped += counts.skipped
    new.rows_duplicates += counts.duplicates
    return new
