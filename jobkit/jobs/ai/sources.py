"""Where a batch's items come from: the payload's list, or a file inside the file roots read lazily on a thread —
a SQLite table (rowid order), a JSONL file (one object a line), or an Excel sheet through the Excel import's reader.

A source is read in order, twice at most (once to count); a file that changes between attempts cannot be resumed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._paths import inside_roots
from .._registry import shorten
from .errors import AISetupError
from .models import Source

__all__ = ["ItemSource", "open_source"]


class ItemSource:
    """The items in order (`rows()`, a fresh iterator each call), how many there are, and a fingerprint."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.fingerprint = ""

    def count(self) -> int:
        return len(self.items)

    def rows(self) -> Iterator[dict[str, Any]]:
        return iter(self.items)


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class _FileSource(ItemSource):
    def __init__(self, path: Path) -> None:
        super().__init__([])
        if not path.is_file():
            raise AISetupError(f"the source {path} does not exist (or is not a file): put it inside the file roots")
        self.path = path
        self.fingerprint = _fingerprint(path)


class _JSONL(_FileSource):
    def count(self) -> int:
        with self.path.open("rb") as f:
            return sum(1 for line in f if line.strip())

    def rows(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise AISetupError(f"{self.path.name} line {n} is not JSON ({exc}): fix the file") from None
                if not isinstance(item, dict):
                    raise AISetupError(f"{self.path.name} line {n} is not a JSON object: each line is one item")
                yield item


class _SQLite(_FileSource):
    def __init__(self, path: Path, table: str) -> None:
        super().__init__(path)
        self.table = table
        with self._connect() as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                                (table,)).fetchone():
                raise AISetupError(f"{path.name} has no table {table!r}")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)

    def count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(f'SELECT COUNT(*) FROM "{self.table}"').fetchone()[0])

    def rows(self) -> Iterator[dict[str, Any]]:
        conn = self._connect()
        conn.row_factory = sqlite3.Row
        try:
            for row in conn.execute(f'SELECT * FROM "{self.table}" ORDER BY rowid'):
                yield dict(row)
        finally:
            conn.close()


class _Excel(_FileSource):
    """An Excel sheet as dicts by header, read by the Excel import's guarded streaming reader."""

    def __init__(self, path: Path, sheet: str | int, header_row: int | None) -> None:
        super().__init__(path)
        self.sheet, self.header_row = sheet, header_row
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self.rows())
        return self._count

    def rows(self) -> Iterator[dict[str, Any]]:
        from ..excel.batches import find_header, header_map
        from ..excel.errors import WorkbookError
        from ..excel.reader import Workbook
        from ..excel.rows import json_value

        try:
            wb = Workbook(self.path)
        except WorkbookError as exc:
            raise AISetupError(str(exc)) from None
        try:
            sheet = wb.sheet(self.sheet)
            reader, source = wb.rows(sheet)
            try:
                rows = iter(reader)
                _, cells, _ = find_header(rows, self.header_row, sheet.title)
                headers = header_map(cells)
                reader.wanted = set(headers)
                for _, values in rows:
                    item = {name: json_value(values.get(col)) for col, name in headers.items()}
                    if any(v not in (None, "") for v in item.values()):
                        yield item
            finally:
                source.close()
        except WorkbookError as exc:
            raise AISetupError(str(exc)) from None
        finally:
            wb.close()


def open_source(source: Source) -> ItemSource:
    path = inside_roots(source.path, "source path", AISetupError)
    if source.kind == "jsonl":
        return _JSONL(path)
    if source.kind == "sqlite":
        assert source.table is not None
        return _SQLite(path, source.table)
    if source.kind == "excel":
        return _Excel(path, source.sheet, source.header_row)
    raise AISetupError(f"unknown source kind {shorten(str(source.kind))!r}")
