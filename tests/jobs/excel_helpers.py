"""Row models, destinations and workbook builders shared by the Excel import tests."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook  # type: ignore[import-untyped]
from pydantic import BaseModel, Field

import jobkit.jobs

HEADERS = ["id", "name", "email", "signup", "balance", "active", "note"]


@jobkit.jobs.register_row_model
class Customer(BaseModel):
    id: int
    name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    signup: dt.date
    balance: float = 0.0
    active: bool = True
    note: str | None = None


@jobkit.jobs.register_row_model
class Reading(BaseModel):
    sensor: str
    taken_at: dt.datetime
    value: float


received: list[BaseModel] = []


@jobkit.jobs.register_python_destination
async def collect(rows: list[BaseModel]) -> None:
    """A `python:collect` destination: keeps every batch in `received`."""
    received.extend(rows)


def customer_rows(n: int, start: int = 1) -> list[list[Any]]:
    return [[i, f"Name {i}", f"user{i}@example.com", dt.date(2024, 1, 1) + dt.timedelta(days=i % 300),
             round(i * 1.5, 2), i % 2 == 0, None if i % 3 else f"note {i}"] for i in range(start, start + n)]


def write_book(path: Path, rows: Iterable[Sequence[Any]], *, headers: Sequence[Any] | None = HEADERS,
               sheet: str = "Data", others: Sequence[str] = ()) -> Path:
    """A real workbook written by openpyxl: `headers` then `rows` on `sheet`, plus empty sheets `others`."""
    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    if headers is not None:
        ws.append(list(headers))
    for row in rows:
        ws.append(list(row))
    for name in others:
        wb.create_sheet(name)
    wb.save(path)
    return path


def write_big(path: Path, n: int) -> Path:
    """A write-only (streamed) workbook of `n` customer rows."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Data")
    ws.append(HEADERS)
    for row in customer_rows(n):
        ws.append(row)
    wb.save(path)
    return path


def replace_part(path: Path, name: str, data: bytes, *, compress: int = zipfile.ZIP_DEFLATED) -> Path:
    """Rewrite one part of an .xlsx (e.g. 'xl/worksheets/sheet1.xml') with `data`, keeping the others."""
    with zipfile.ZipFile(path) as src:
        parts = {i.filename: src.read(i) for i in src.infolist()}
    parts[name] = data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as out:
        for part, content in parts.items():
            out.writestr(part, content)
    path.write_bytes(buf.getvalue())
    return path


SHEET_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'


def sheet_xml(body: str, *, dimension: str | None = None, prolog: str = "") -> bytes:
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n{prolog}'
            f"<worksheet {SHEET_NS}>{dim}<sheetData>{body}</sheetData></worksheet>").encode()


def row_xml(r: int, *values: Any) -> str:
    cells = []
    for i, v in enumerate(values):
        ref = f"{chr(65 + i)}{r}"
        if isinstance(v, str):
            cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{v}</t></is></c>')
        else:
            cells.append(f'<c r="{ref}"><v>{v}</v></c>')
    return f'<row r="{r}">{"".join(cells)}</row>'


def table(db: Path, name: str = "customers") -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()


def to_shared_strings(path: Path, extra: Sequence[str] = ()) -> Path:
    """Rewrite an openpyxl workbook (inline strings) the way Excel saves it: text in xl/sharedStrings.xml.

    `extra` are raw <si> bodies appended to the table (rich text runs, escapes), for cells that refer to them.
    """
    import re

    with zipfile.ZipFile(path) as z:
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
        types = z.read("[Content_Types].xml").decode()
        rels = z.read("xl/_rels/workbook.xml.rels").decode()
    table: dict[str, int] = {}

    def shared(m: re.Match[str]) -> str:
        index = table.setdefault(m.group(2), len(table))
        return f'<c r="{m.group(1)}" t="s"><v>{index}</v></c>'

    sheet = re.sub(r'<c r="([A-Z]+\d+)" t="inlineStr"><is><t>(.*?)</t></is></c>', shared, sheet)
    items = [f"<si><t>{text}</t></si>" for text in table] + [f"<si>{body}</si>" for body in extra]
    sst = (f'<?xml version="1.0" encoding="UTF-8"?><sst {SHEET_NS} count="{len(items)}" uniqueCount="{len(items)}">'
           f'{"".join(items)}</sst>')
    types = types.replace("</Types>", '<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
                          'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
    rels = rels.replace("</Relationships>", '<Relationship Id="rIdSST" Type="http://schemas.openxmlformats.org/'
                        'officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>')
    replace_part(path, "xl/worksheets/sheet1.xml", sheet.encode())
    replace_part(path, "[Content_Types].xml", types.encode())
    replace_part(path, "xl/_rels/workbook.xml.rels", rels.encode())
    replace_part(path, "xl/sharedStrings.xml", sst.encode())
    return path
