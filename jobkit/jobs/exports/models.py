"""The export's payload (`Export`), its filters, and its result (`ExportResult`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Export", "ExportResult", "Filter", "Format"]

Format = Literal["xlsx", "csv", "jsonl"]
FilterOp = Literal["=", "!=", "<", "<=", ">", ">=", "in", "not in", "like", "is null", "is not null"]


class Filter(BaseModel):
    """One condition on a column, sent as a query parameter (never spliced into the SQL)."""

    model_config = ConfigDict(extra="forbid")

    column: str
    op: FilterOp = "="
    value: Any = None


class Export(BaseModel):
    """Stream a table or query of a database into a new .xlsx, .csv or .jsonl file inside the file roots."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, description="a database the worker registered ('warehouse'), or"
                               " 'sqlite:///file.db' inside the file roots; a registered query knows its own")
    table: str | None = Field(default=None, description="a table or view ('schema.table' on PostgreSQL)")
    columns: list[str] | None = Field(default=None, min_length=1, description="table columns, in order; default all")
    where: list[Filter] = Field(default_factory=list, description="conditions on table columns, all of which hold")
    order_by: list[str] = Field(default_factory=list, description="table columns; '-name' for descending")
    query: str | None = Field(default=None, description="a query the worker registered with register_query")
    params: dict[str, Any] = Field(default_factory=dict, description="the :name parameters of the query")
    sql: str | None = Field(default=None, description="raw read-only SQL, only on a database registered with"
                            " allow_sql=True")
    limit: int | None = Field(default=None, ge=0)
    format: Format | None = Field(default=None, description="default: from the path's extension, else xlsx")
    path: str | None = Field(default=None, description="a new file inside the file roots (never replaced); default:"
                             " '<table or query>-<job id>.<format>' in the first root")
    sheet: str = Field(default="Export", min_length=1, max_length=31, description="the .xlsx sheet's name")
    owner: str | None = Field(default=None, description="export only this owner's rows (a job with an owner always"
                              " exports its owner's)")
    escape_formulas: bool = Field(default=True, description="csv: text starting with = + - @ gets a leading ' so a"
                                  " spreadsheet shows it instead of running it")
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="rows fetched per round trip")

    @model_validator(mode="after")
    def _one_source(self) -> Export:
        given = [n for n in ("table", "query", "sql") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of table, query or sql (given: {', '.join(given) or 'none'})")
        if self.source is None and self.query is None:
            raise ValueError("name the source database: a name the worker registered, or 'sqlite:///file.db'")
        if self.table is None and (self.columns or self.where or self.order_by):
            raise ValueError("columns, where and order_by apply to a table; a query picks its own")
        if self.table is not None and self.params:
            raise ValueError("params belong to a query; filter a table with where=[...]")
        return self

    @field_validator("sheet")
    @classmethod
    def _sheet_name(cls, v: str) -> str:
        if any(c in v for c in "[]:*?/\\"):
            raise ValueError("a sheet name cannot hold any of [ ] : * ? / \\")
        return v


class ExportResult(BaseModel):
    """The published file, what is in it, and its SHA-256 so a reader can check what it got."""

    path: str
    format: Format
    rows: int
    columns: list[str]
    bytes: int
    sha256: str
    sheets: int = 1
    source: str = ""
    owner: str | None = None
    duration_s: float = 0.0
    attempts: int = 1
