"""The optional error workbook: the rejected rows as they were, plus their sheet row and the reason."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # type: ignore[import-untyped]

from .models import RejectedRow

__all__ = ["error_file_path", "write_error_file"]


def error_file_path(source: Path, option: bool | str) -> Path | None:
    """Where the error file goes: `<name>.errors.xlsx` beside the source for True, the given path for a str."""
    if option is False:
        return None
    if option is True:
        return source.with_name(source.stem + ".errors.xlsx")
    return Path(option)


def write_error_file(path: Path, headers: Sequence[str], rows: Sequence[RejectedRow], total: int) -> None:
    """Write the workbook atomically (a temporary file, then a rename), streaming with openpyxl's write-only mode."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Rejected rows")
    ws.append(["Row", *headers, "Reason"])
    for r in rows:
        ws.append([r.row, *(_cell(ws, v) for v in r.values), _cell(ws, r.reason)])
    if total > len(rows):
        ws.append([None, *([None] * len(headers)), f"... and {total - len(rows):,} more rejected rows not listed"])
    fd, tmp = tempfile.mkstemp(prefix=".errors-", suffix=".xlsx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wb.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(ws: Any, value: Any) -> Any:
    """Text stays text: a rejected cell reading '=...' must not come back as a live formula."""
    if not isinstance(value, str):
        return value
    cell = WriteOnlyCell(ws, value=ILLEGAL_CHARACTERS_RE.sub("", value))
    cell.data_type = "s"
    return cell
