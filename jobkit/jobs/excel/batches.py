"""Reading the sheet in batches on a worker thread: the header first, then validated rows, batch by batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .errors import WorkbookError
from .models import RejectedRow, RowError
from .rows import RowBuilder, header_text, json_value

__all__ = ["Batch", "find_header", "read_batch"]

Rows = Iterator[tuple[int, dict[int, Any]]]


def _blank(cells: dict[int, Any]) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in cells.values())


def find_header(rows: Rows, header_row: int | None, sheet: str) -> tuple[int, dict[int, Any], int]:
    """The header row (row `header_row`, or the first row with a value in it), and how many rows it took."""
    first_seen: int | None = None
    seen = 0
    for row_no, cells in rows:
        seen += 1
        if _blank(cells):
            continue
        if header_row is None or row_no == header_row:
            return row_no, cells, seen
        if first_seen is None:
            first_seen = row_no
        if row_no > header_row:
            break
    if first_seen is None:
        raise WorkbookError(f"sheet {sheet!r} is empty: it has no header row and no data")
    raise WorkbookError(f"row {header_row} of sheet {sheet!r} is empty, so it cannot be the header; the first row"
                        f" with values is row {first_seen} (set header_row={first_seen}, or leave it unset)")


def check_merges(merges: list[str], header_row: int, sheet: str) -> None:
    """Refuse merged cells in the header: one label spanning columns leaves the others without a name."""
    hits = []
    for ref in merges:
        start, _, end = ref.partition(":")
        rows = [int(part.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) for part in (start, end or start)]
        if rows[0] <= header_row <= rows[1]:
            hits.append(ref)
    if hits:
        raise WorkbookError(f"sheet {sheet!r} has merged header cells ({', '.join(hits[:10])}): unmerge them and give"
                            " every column its own header, or set header_row to the row with one name per column")


@dataclass
class Batch:
    """What one pass of up to `size` rows produced."""

    models: list[BaseModel] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    rows_read: int = 0
    rows_rejected: int = 0
    blank_rows: int = 0
    skipped: int = 0
    last_row: int = 0
    done: bool = False


def read_batch(rows: Rows, builder: RowBuilder, size: int, resume_at: int, headers: dict[int, str] | None) -> Batch:
    """Up to `size` rows from `rows`, skipping those below `resume_at` (committed by an earlier attempt).

    `headers` (column -> header), when given, asks for each rejected row's cells, for the error file.
    """
    batch = Batch()
    for row_no, cells in rows:
        batch.last_row = row_no
        if row_no < resume_at:
            batch.skipped += 1
        else:
            result = builder.build(row_no, cells)
            if result is None:
                batch.blank_rows += 1
            elif isinstance(result, BaseModel):
                batch.rows_read += 1
                batch.models.append(result)
            else:
                batch.rows_read += 1
                batch.rows_rejected += 1
                batch.errors.extend(result)
                if headers is not None:
                    batch.rejected.append(_rejected(row_no, cells, result, headers))
        if batch.rows_read + batch.blank_rows + batch.skipped >= size:
            return batch
    batch.done = True
    return batch


def _rejected(row_no: int, cells: dict[int, Any], errors: list[RowError], headers: dict[int, str]) -> RejectedRow:
    reason = "; ".join(f"{e.column}: {e.message}" if e.column else e.message for e in errors)
    values = [json_value(cells.get(c)) for c in headers]
    return RejectedRow(row=row_no, values=values, reason=reason)


def describe_error(e: RowError) -> str:
    where = f"row {e.row}" + (f", column {e.column!r}" if e.column else "")
    shown = "" if e.value is None else f" (value {e.value!r})"
    return f"{where}: {e.message}{shown}"


def header_map(cells: dict[int, Any]) -> dict[int, str]:
    """Column -> header text, for columns that have one."""
    return {col: text for col, value in sorted(cells.items()) if (text := header_text(value))}
