"""The three file formats an export writes, each streaming rows into a file as they come.

- xlsx: openpyxl's write-only workbook (rows go to a temporary file, not into memory); a sheet holds at most
  1,048,576 rows, so longer exports continue on "Export (2)", ... Text is written as text: a value starting
  with "=" never becomes a live formula, and characters Excel cannot hold are dropped.
- csv: UTF-8, comma-separated, a header row; NULL is an empty field, true/false for booleans.
- jsonl: one JSON object per row.
"""

from __future__ import annotations

import abc
import base64
import csv
import datetime as dt
import decimal
import json
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # type: ignore[import-untyped]

from .models import Format

__all__ = ["SHEET_ROWS", "FileWriter", "open_writer"]

SHEET_ROWS = 1_048_576  # Excel's limit, the header row included
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _text(value: Any) -> Any:
    """A value JSON and CSV cannot hold as it is, as text (dates in ISO form, bytes in base64)."""
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


class FileWriter(abc.ABC):
    """Writes rows of `columns` into `path` (a new temporary file); `close` finishes the file."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = path, list(columns)
        self.sheets = 1

    @abc.abstractmethod
    def write(self, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class CsvWriter(FileWriter):
    def __init__(self, path: Path, columns: Sequence[str], escape_formulas: bool) -> None:
        super().__init__(path, columns)
        self.file: IO[str] = path.open("w", encoding="utf-8", newline="")
        self.out = csv.writer(self.file)
        self.escape = escape_formulas
        self.out.writerow([self._cell(c) for c in self.columns])

    def _cell(self, value: Any) -> Any:
        if isinstance(value, str):
            return "'" + value if self.escape and value.startswith(_FORMULA) else value
        if value is True or value is False:
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, default=_text)
        return _text(value)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        cell = self._cell
        self.out.writerows([[cell(v) for v in row] for row in rows])

    def close(self) -> None:
        self.file.close()


class JsonlWriter(FileWriter):
    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        super().__init__(path, columns)
        self.file: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self.encode = json.JSONEncoder(ensure_ascii=False, default=_text, allow_nan=False).encode

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        cols, encode = self.columns, self.encode
        try:
            self.file.write("".join(encode(dict(zip(cols, row, strict=True))) + "\n" for row in rows))
        except ValueError as exc:  # NaN or infinity
            raise ValueError(f"a value JSON cannot hold ({exc}): export as csv or xlsx, or filter those rows out"
                             ) from None

    def close(self) -> None:
        self.file.close()


class XlsxWriter(FileWriter):
    def __init__(self, path: Path, columns: Sequence[str], sheet: str) -> None:
        super().__init__(path, columns)
        self.title = sheet
        self.book = Workbook(write_only=True)
        self._new_sheet()

    def _new_sheet(self) -> None:
        title = self.title if self.sheets == 1 else f"{self.title[:25]} ({self.sheets})"
        self.sheet = self.book.create_sheet(title)
        self.sheet.append([self._cell(c) for c in self.columns])
        self.rows_in_sheet = 1

    def _cell(self, value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith("=") or ILLEGAL_CHARACTERS_RE.search(value):
                cell = WriteOnlyCell(self.sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
                cell.data_type = "s"  # text, never a formula
                return cell
            return value
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)  # Excel has no time zones: UTC
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, default=_text)
        if isinstance(value, uuid.UUID | bytes | bytearray | memoryview):
            return _text(value)
        return value

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        cell = self._cell
        for row in rows:
            if self.rows_in_sheet >= SHEET_ROWS:
                self.sheets += 1
                self._new_sheet()
            self.sheet.append([cell(v) for v in row])
            self.rows_in_sheet += 1

    def close(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.book.save(self.path)


def open_writer(fmt: Format, path: Path, columns: Sequence[str], sheet: str, escape_formulas: bool) -> FileWriter:
    if fmt == "xlsx":
        return XlsxWriter(path, columns, sheet)
    if fmt == "csv":
        return CsvWriter(path, columns, escape_formulas)
    return JsonlWriter(path, columns)
