"""Rows of one worksheet, streamed from its XML by the C expat parser, each cell typed as Excel meant it.

Only rows present in the file are yielded, with their real sheet row numbers, so a declared dimension
or a row numbered 1,000,000 allocates nothing. Processed rows are dropped from the tree as we go.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError, TreeBuilder, XMLParser

from openpyxl.utils.datetime import from_excel, from_ISO8601  # type: ignore[import-untyped]

from .errors import WorkbookError
from .guard import PROLOG_LIMIT, CappedReader, check_prolog
from .strings import SharedStrings, rich_text

__all__ = ["MAX_COLUMN", "MAX_ROW", "NO_CACHED_VALUE", "CellError", "SheetRows", "column_letter"]

NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
SHEET_DATA, ROW, CELL, VALUE, FORMULA, INLINE = (NS + t for t in ("sheetData", "row", "c", "v", "f", "is"))
MAX_ROW, MAX_COLUMN = 1_048_576, 16_384  # Excel's own limits
CHUNK = 1 << 18
_DIGITS = "0123456789"


@dataclass(frozen=True)
class CellError:
    """A cell showing an Excel error such as #DIV/0! or #N/A."""

    code: str


class _NoCachedValue:
    def __repr__(self) -> str:
        return "<formula without a saved value>"


NO_CACHED_VALUE = _NoCachedValue()


def column_letter(col: int) -> str:
    letters = ""
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


class SheetRows:
    """Iterate `(sheet_row, {column: value})`; set `wanted` to the columns to keep once the header is known."""

    def __init__(
        self, source: CappedReader, *, name: str, part: str, strings: SharedStrings, date_styles: Collection[int],
        duration_styles: Collection[int], epoch: dt.datetime,
    ) -> None:
        self.source, self.name, self.part = source, name, part
        self.strings = strings
        self.date_styles = {str(s) for s in date_styles}
        self.duration_styles = {str(s) for s in duration_styles}
        self.epoch = epoch
        self.wanted: Collection[int] | None = None
        self._columns: dict[str, int] = {}

    def __iter__(self) -> Iterator[tuple[int, dict[int, Any]]]:
        # The C parser builds the tree with no Python call per element. We ask it for "start" events only
        # until <sheetData> opens, then for none (XMLPullParser would cost a Python step per element), and
        # take finished rows from sheetData's children: every child but the last is complete.
        parser = XMLParser(target=TreeBuilder())
        events: list[tuple[str, Element]] = []
        setevents = parser._setevents  # type: ignore[attr-defined]  # what XMLPullParser uses, C and pure Python
        setevents(events, ("start",))
        data: Element | None = None
        row_no = 0
        first = True
        while chunk := self.source.read(CHUNK):
            if first:
                check_prolog(self.name, self.part, chunk[:PROLOG_LIMIT])
                first = False
            self._feed(parser, chunk)
            if data is None:
                data = next((el for _, el in events if el.tag == SHEET_DATA), None)
                events.clear()
                if data is not None:
                    setevents(events, ())
            if data is not None and len(data) > 1:
                done = data[:-1]
                del data[:-1]
                for el in done:
                    row_no, cells = self._row(el, row_no)
                    yield row_no, cells
        self._feed(parser, None)
        for el in data if data is not None else ():
            row_no, cells = self._row(el, row_no)
            yield row_no, cells

    def _feed(self, parser: XMLParser, chunk: bytes | None) -> None:
        try:
            if chunk is None:
                parser.close()
            else:
                parser.feed(chunk)
        except ParseError as exc:
            raise WorkbookError(f"{self.name}: the sheet's XML is broken ({exc}): the file is damaged or was not"
                                " saved by a spreadsheet program; open it in Excel and save it again") from None

    def _row(self, el: Element, previous: int) -> tuple[int, dict[int, Any]]:
        if el.tag != ROW:
            raise WorkbookError(f"{self.name}: the sheet holds a <{el.tag.rsplit('}', 1)[-1]}> where rows belong:"
                                " the file is damaged")
        row_no = self._row_number(el, previous)
        return row_no, self._cells(el, row_no)

    def _row_number(self, el: Element, previous: int) -> int:
        r = el.get("r")
        try:
            number = int(r) if r is not None else previous + 1
        except ValueError:
            raise WorkbookError(f"{self.name}: a row is numbered {r!r}: the file is damaged") from None
        if not previous < number <= MAX_ROW:
            raise WorkbookError(f"{self.name}: row number {number} follows row {previous} (rows must ascend and stay"
                                f" within Excel's {MAX_ROW:,}): the file is damaged or forged")
        return number

    def _cells(self, row: Element, row_no: int) -> dict[int, Any]:
        out: dict[int, Any] = {}
        wanted, columns, value_of = self.wanted, self._columns, self._value
        col = 0
        for c in row:
            ref = c.get("r")
            if ref is not None:
                col = columns.get(ref.rstrip(_DIGITS)) or self._column(ref, row_no)
            else:
                col += 1
                if col > MAX_COLUMN:
                    raise WorkbookError(f"{self.name}: row {row_no} has a cell beyond Excel's last column XFD")
            if (wanted is None or col in wanted) and c.tag == CELL:
                out[col] = value_of(c, ref, row_no)
        return out

    def _column(self, ref: str, row_no: int) -> int:
        letters = ref.rstrip(_DIGITS)
        if not (0 < len(letters) <= 3 and letters.isascii() and letters.isalpha() and letters.isupper()):
            raise WorkbookError(f"{self.name}: row {row_no} has a cell named {ref[:20]!r}: the file is damaged")
        col = 0
        for ch in letters:
            col = col * 26 + ord(ch) - 64
        if col > MAX_COLUMN:
            raise WorkbookError(f"{self.name}: row {row_no} has a cell {ref[:20]!r} beyond Excel's last column XFD")
        self._columns[letters] = col
        return col

    def _value(self, c: Element, ref: str | None, row_no: int) -> Any:
        kind = c.get("t")
        if kind == "inlineStr":
            inline = c.find(INLINE)
            return rich_text(inline) if inline is not None else None
        text = c.findtext(VALUE)
        if not text and kind != "str" and c.find(FORMULA) is not None:
            return NO_CACHED_VALUE  # no <v>, or an empty one: the formula was never calculated
        if text is None:
            return None
        try:
            if kind is None or kind == "n":
                return self._number(text, c.get("s")) if text else None
            if kind == "s":
                return self.strings[int(text)]
            if kind == "b":
                return text.strip() in ("1", "true")
            if kind == "e":
                return CellError(text)
            if kind == "d":
                return from_ISO8601(text) if text else None
        except (ValueError, IndexError, OverflowError):
            where = ref or f"in row {row_no}"
            raise WorkbookError(f"{self.name}: cell {where} holds {text[:40]!r}, which is not a valid"
                                f" {'shared string index' if kind == 's' else 'value'}: the file is damaged") from None
        return text  # "str" (a formula's text result) and anything unknown

    def _number(self, text: str, style: str | None) -> Any:
        number: int | float = float(text) if ("." in text or "e" in text or "E" in text) else int(text)
        if style is not None and style in self.date_styles:
            try:
                return from_excel(number, self.epoch, timedelta=style in self.duration_styles)
            except (OverflowError, ValueError):
                return number  # a date cell out of range: the row model decides
        return number
