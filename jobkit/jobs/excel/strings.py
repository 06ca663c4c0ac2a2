"""The shared string table, packed: one UTF-8 buffer and an offset array instead of a million `str` objects.

Excel stores each distinct text once, in xl/sharedStrings.xml; cells refer to it by index. A workbook
with a million unique names would cost hundreds of MB as a list of str; packed it costs its bytes.
"""

from __future__ import annotations

import re
from array import array
from typing import cast
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from .errors import WorkbookError
from .guard import PROLOG_LIMIT, CappedReader, check_prolog

__all__ = ["SharedStrings", "read_shared_strings", "rich_text"]

NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
SI, TEXT, RUN = NS + "si", NS + "t", NS + "r"
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def rich_text(el: Element) -> str:
    """The text of an <si> or <is> element: its <t>, or its runs' <t>s (phonetic hints left out)."""
    parts = []
    for child in el:
        if child.tag == TEXT:
            parts.append(child.text or "")
        elif child.tag == RUN:
            parts.append(child.findtext(TEXT) or "")
    text = "".join(parts)
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text) if "_x" in text else text


class SharedStrings:
    """Indexable like a list of str; each lookup decodes one slice."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("Q")

    def append(self, text: str) -> None:
        self._data += text.encode()
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        if index < 0:
            raise IndexError(index)
        start = self._ends[index - 1] if index else 0
        return self._data[start : self._ends[index]].decode()


def read_shared_strings(stream: CappedReader, name: str, part: str) -> SharedStrings:
    table = SharedStrings()
    parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
    root: Element | None = None
    first = True
    try:
        while chunk := stream.read(1 << 18):
            if first:
                check_prolog(name, part, chunk[:PROLOG_LIMIT])
                first = False
            parser.feed(chunk)
            for item in parser.read_events():
                event, el = cast("tuple[str, Element]", item)
                if root is None:
                    root = el
                elif event == "end" and el.tag == SI:
                    table.append(rich_text(el))
                    root.clear()  # keep memory flat: strings are packed, their elements dropped
        parser.close()
    except ParseError as exc:
        raise WorkbookError(f"{name}: {part} is broken XML ({exc}): open the file in Excel and save it again") from None
    return table
