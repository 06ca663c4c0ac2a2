"""Where a DB insert's rows come from: the payload, a JSONL or CSV file inside the file roots, or another job's result.

Each source hands out records in order with a 1-based row number (a JSONL file's line, a CSV file's record
counting the header as 1, the position in a list) and can start again after the rows an earlier attempt
committed: files by byte offset, lists by position. Records that cannot be read become row errors.
"""

from __future__ import annotations

import abc
import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..excel.models import RowError
from .errors import InsertSetupError

__all__ = ["Chunk", "CsvSource", "JsonlSource", "ListSource", "RowSource", "file_source"]

JSONL = (".jsonl", ".ndjson", ".jsonlines")


def _json_reader() -> Callable[[bytes], Any]:
    """orjson's parser when the `jobkit[fast]` extra is installed (about 4x `json.loads` on a line of 8 fields),
    else `json.loads`. A line orjson refuses is read again by `json.loads`, so both accept the same lines (NaN,
    integers past 64 bits) and a bad line's message is the standard library's."""
    try:
        import orjson
    except ImportError:
        return json.loads

    fast = orjson.loads

    def loads(line: bytes) -> Any:
        try:
            return fast(line)
        except ValueError:
            return json.loads(line)

    return loads


parse_json_line = _json_reader()


@dataclass
class Chunk:
    """Up to n records read in one go: (row number, object) pairs, the records that could not be read, and where
    the source stands after them."""

    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    first_row: int = 0
    last_row: int = 0
    position: int = 0  # rows handled from the start of the source
    offset: int = 0  # a file's byte offset after them
    done: bool = False


class RowSource(abc.ABC):
    """Records in order; `start(position, offset)` skips what earlier attempts handled."""

    description = ""
    total: int | None = None  # rows in all, when known without reading everything
    size: int | None = None  # a file's size in bytes, for progress

    def __init__(self) -> None:
        self.position = 0
        self.offset = 0

    @abc.abstractmethod
    def start(self, position: int, offset: int) -> None: ...

    @abc.abstractmethod
    def read(self, n: int) -> Chunk: ...

    def first_keys(self) -> list[str] | None:
        """The keys of the first record, or a CSV file's header: the columns when the payload names none."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file, if any."""


class ListSource(RowSource):
    """Rows given as a list (the payload's, or another job's result)."""

    def __init__(self, rows: list[Any], description: str) -> None:
        super().__init__()
        self.rows, self.description, self.total = rows, description, len(rows)

    def start(self, position: int, offset: int) -> None:
        self.position = min(position, len(self.rows))

    def first_keys(self) -> list[str] | None:
        first = self.rows[0] if self.rows else None
        return list(first) if isinstance(first, dict) else None

    def read(self, n: int) -> Chunk:
        chunk = Chunk(first_row=self.position + 1)
        for i in range(self.position, min(self.position + n, len(self.rows))):
            row = self.rows[i]
            if isinstance(row, dict):
                chunk.records.append((i + 1, row))
            else:
                chunk.errors.append(RowError(row=i + 1, message=f"a row is a JSON object, not {type(row).__name__}"))
            self.position = i + 1
        chunk.last_row, chunk.position = self.position, self.position
        chunk.done = self.position >= len(self.rows)
        return chunk


class _FileSource(RowSource):
    def __init__(self, path: Path, shown: str) -> None:
        super().__init__()
        self.path, self.description = path, shown
        if not path.is_file():
            raise InsertSetupError(f"{shown!r} is not a file" if path.exists() else f"{shown!r} does not exist"
                                   " inside the file roots")
        self.size = path.stat().st_size
        self.file: IO[bytes] = path.open("rb")

    def close(self) -> None:
        self.file.close()

    def _decode(self, line: bytes, row: int) -> str:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InsertSetupError(f"{self.description!r} is not UTF-8 text (row {row}: {exc.reason} at byte"
                                   f" {exc.start}); save it as UTF-8") from None
        return text[1:] if text.startswith("\ufeff") else text


class JsonlSource(_FileSource):
    """One JSON object per line; blank lines are skipped; a row's number is its line."""

    def start(self, position: int, offset: int) -> None:
        self.position, self.offset = position, offset
        self.file.seek(offset)

    def first_keys(self) -> list[str] | None:
        here = self.file.tell()
        try:
            self.file.seek(0)
            for line in self.file:
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        return None
                    return list(obj) if isinstance(obj, dict) else None
            return None
        finally:
            self.file.seek(here)

    def read(self, n: int) -> Chunk:
        chunk = Chunk(first_row=self.position + 1)
        records, readline, loads = chunk.records, self.file.readline, parse_json_line
        taken = 0
        while taken < n:
            line = readline()
            if not line:
                chunk.done = True
                break
            self.position += 1
            if self.offset == 0 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                self.offset, line = 3, line[3:]
            self.offset += len(line)
            if len(line) < 3 and not line.strip():
                continue
            taken += 1
            try:
                obj = loads(line)  # both parsers read UTF-8 bytes themselves
            except ValueError as exc:
                if line.isspace():
                    taken -= 1
                    continue
                chunk.errors.append(self._bad(line, exc))
                continue
            if type(obj) is dict:
                records.append((self.position, obj))
            else:
                chunk.errors.append(RowError(row=self.position, message=f"line {self.position} is a JSON"
                                             f" {type(obj).__name__}, not an object"))
        chunk.last_row, chunk.position, chunk.offset = self.position, self.position, self.offset
        return chunk

    def _bad(self, line: bytes, exc: ValueError) -> RowError:
        row = self.position
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return RowError(row=row, message=f"line {row} is not UTF-8 ({bad.reason} at byte {bad.start})")
        return RowError(row=row, message=f"line {row} is not valid JSON: {exc}")


class CsvSource(_FileSource):
    """A header row, then one record per row; empty fields are NULL; a row's number counts the header as 1."""

    def __init__(self, path: Path, shown: str, delimiter: str) -> None:
        super().__init__(path, shown)
        self.delimiter = delimiter
        self.reader = csv.reader(self._lines(), delimiter=delimiter)
        try:
            self.header = [h.strip() for h in next(self.reader)]
        except StopIteration:
            raise InsertSetupError(f"{shown!r} is empty: a CSV file needs a header row") from None
        except csv.Error as exc:
            raise InsertSetupError(f"the header of {shown!r} cannot be read as CSV ({exc})") from None
        if not all(self.header) or len(set(self.header)) != len(self.header):
            raise InsertSetupError(f"the header of {shown!r} needs a distinct, non-empty name for every column, not"
                                   f" {self.header[:20]}")
        self.header_end = self.offset

    def _lines(self) -> Any:
        while line := self.file.readline():
            self.offset += len(line)
            yield self._decode(line, self.position + 1)

    def start(self, position: int, offset: int) -> None:
        if offset:
            self.file.seek(offset)
            self.position, self.offset = position, offset
        else:
            self.position = 0

    def first_keys(self) -> list[str] | None:
        return list(self.header)

    def read(self, n: int) -> Chunk:
        chunk = Chunk(first_row=self.position + 2)
        width = len(self.header)
        for _ in range(n):
            try:
                cells = next(self.reader)
            except StopIteration:
                chunk.done = True
                break
            except csv.Error as exc:
                raise InsertSetupError(f"{self.description!r} is not valid CSV after row {self.position + 1}: {exc}"
                                       ) from None
            self.position += 1
            row = self.position + 1
            if len(cells) > width:
                chunk.errors.append(RowError(row=row, message=f"row {row} has {len(cells)} fields, the header"
                                             f" {width}"))
                continue
            chunk.records.append((row, {h: (c if c != "" else None) for h, c in zip(self.header, cells,
                                                                                   strict=False)}))
        chunk.last_row, chunk.position, chunk.offset = self.position + 1, self.position, self.offset
        return chunk


def file_source(path: Path, shown: str, delimiter: str) -> RowSource:
    """The source for a file, by its extension."""
    suffix = path.suffix.lower()
    if suffix in JSONL:
        return JsonlSource(path, shown)
    if suffix in (".csv", ".tsv", ".txt"):
        return CsvSource(path, shown, "\t" if suffix == ".tsv" and delimiter == "," else delimiter)
    raise InsertSetupError(f"{shown!r} is neither JSON lines ({', '.join(JSONL)}) nor CSV (.csv, .tsv): rename it, or"
                           " convert it")
