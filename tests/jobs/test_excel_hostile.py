"""Bad and hostile uploads: each one fails at once (never retried) with a message a person can act on."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook  # type: ignore[import-untyped]

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import WorkbookError
from jobkit.jobs.excel.guard import CappedReader

from . import excel_helpers as h
from .excel_helpers import customer_rows, replace_part, row_xml, sheet_xml, write_book

SHEET = "xl/worksheets/sheet1.xml"
BOMB = ('<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n')


def payload(path: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "sheet": "Data", "row_model": "Customer",
            "destination": f"sqlite:///{tmp_path / 'w.db'}?table=customers", **extra}


async def failure(backend: Backend, path: Path, tmp_path: Path, **extra: Any) -> str:
    """Run the import and return the job's error; it must fail on its first attempt, not be retried."""
    with pytest.raises(jobkit.JobFailed) as info:
        await jobkit.run(jobkit.jobs.excel_import, payload(path, tmp_path, **extra), backend=backend, timeout=30)
    job = info.value.job
    assert job.attempts == 1, f"retried: {job.error}"
    assert "retries skipped" in (job.error or "")
    return job.error or ""


def good_book(tmp_path: Path, name: str = "good.xlsx", n: int = 3) -> Path:
    return write_book(tmp_path / name, customer_rows(n))


# -- not a workbook at all -----------------------------------------------------------------------------------------

async def test_csv_renamed(memory: Backend, tmp_path: Path) -> None:
    src = tmp_path / "upload.xlsx"
    src.write_text("id,name,email\n1,Ann,ann@x.io\n")
    assert "text file (CSV or similar)" in await failure(memory, src, tmp_path)


async def test_pdf_renamed(memory: Backend, tmp_path: Path) -> None:
    src = tmp_path / "upload.xlsx"
    src.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n")
    assert "is a PDF document, not an Excel workbook" in await failure(memory, src, tmp_path)


async def test_word_document_renamed(memory: Backend, tmp_path: Path) -> None:
    src = tmp_path / "upload.xlsx"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<document/>")
    assert "is a Word document, not an Excel workbook" in await failure(memory, src, tmp_path)


async def test_empty_file(memory: Backend, tmp_path: Path) -> None:
    src = tmp_path / "upload.xlsx"
    src.write_bytes(b"")
    assert "empty (0 bytes)" in await failure(memory, src, tmp_path)


async def test_missing_file(memory: Backend, tmp_path: Path) -> None:
    assert "does not exist" in await failure(memory, tmp_path / "nowhere.xlsx", tmp_path)


async def test_truncated_zip(memory: Backend, tmp_path: Path) -> None:
    src = good_book(tmp_path, n=200)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    assert "is damaged: it is truncated, or not a zip file" in await failure(memory, src, tmp_path)


async def test_corrupt_sheet_data_with_intact_directory(memory: Backend, tmp_path: Path) -> None:
    src = good_book(tmp_path, n=2000)
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(SHEET)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 200, start + 400):
        data[i] ^= 0x5A
    src.write_bytes(bytes(data))
    error = await failure(memory, src, tmp_path)
    assert "corrupt" in error or "damaged" in error
    assert not (tmp_path / "w.db").exists() or h.table(tmp_path / "w.db") == []


@pytest.mark.parametrize("damage", ["signature", "name_length"])
async def test_corrupt_zip_member_fails_at_once_with_a_short_message(memory: Backend, tmp_path: Path,
                                                                     damage: str) -> None:
    """zipfile raises BadZipFile for a damaged local header; its text may carry kilobytes of raw bytes."""
    src = good_book(tmp_path, n=50)
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        offset = z.getinfo(SHEET).header_offset
    if damage == "signature":
        data[offset:offset + 4] = b"XXXX"
    else:  # the header's file name length: zipfile reads (and quotes) 60,000 bytes as the name
        data[offset + 26:offset + 28] = (60_000).to_bytes(2, "little")
    src.write_bytes(bytes(data))
    error = await failure(memory, src, tmp_path)
    assert error.startswith("WorkbookError: good.xlsx is damaged"), error
    assert "upload it again" in error and "save it again" in error
    assert len(error) < 300 and "\\x" not in error and "b'" not in error, error


def _ole(payload: bytes) -> bytes:
    return b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504 + payload + b"\x00" * 1024


async def test_encrypted_workbook(memory: Backend, tmp_path: Path) -> None:
    src = tmp_path / "secret.xlsx"
    src.write_bytes(_ole("EncryptionInfo".encode("utf-16-le") + b"\x00" * 50 + "EncryptedPackage".encode("utf-16-le")))
    error = await failure(memory, src, tmp_path)
    assert "password-protected (encrypted)" in error and "remove the password" in error


async def test_legacy_xls(memory: Backend, tmp_path: Path) -> None:
    src = tmp_path / "old.xlsx"
    src.write_bytes(_ole("Workbook".encode("utf-16-le")))
    assert "legacy Excel 97-2003 (.xls)" in await failure(memory, src, tmp_path)


# -- a workbook with the wrong shape -------------------------------------------------------------------------------

async def test_missing_sheet_lists_the_sheets(memory: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "s.xlsx", customer_rows(2), others=["Summary"])
    error = await failure(memory, src, tmp_path, sheet="Customers")
    assert "has no sheet named 'Customers'; its sheets are: 'Data', 'Summary'" in error
    error = await failure(memory, src, tmp_path, sheet=5)
    assert "no sheet at index 5" in error and "'Data', 'Summary'" in error


async def test_missing_required_columns_are_listed(memory: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "c.xlsx", [[1, "Ann"]], headers=["id", "name", "phone"])
    error = await failure(memory, src, tmp_path)
    assert "lacks required column(s) 'email', 'signup' for Customer" in error
    assert "its headers are: 'id', 'name', 'phone'" in error


async def test_duplicate_headers(memory: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "d.xlsx", [], headers=[*h.HEADERS, "Email"])
    error = await failure(memory, src, tmp_path)
    assert "duplicate headers" in error and "'email' from columns C 'email', H 'Email'" in error


async def test_empty_sheet(memory: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "e.xlsx", [], headers=None)
    assert "sheet 'Data' is empty" in await failure(memory, src, tmp_path)


async def test_formulas_without_cached_values(memory: Backend, tmp_path: Path) -> None:
    rows = customer_rows(3)
    rows[1][4] = "=A3*2"  # balance: openpyxl writes the formula, never its value
    src = write_book(tmp_path / "f.xlsx", rows)
    error = await failure(memory, src, tmp_path)
    assert "cell E3 (column 'balance')" in error and "formula with no saved value" in error
    assert "Open it in Excel or LibreOffice and save it again" in error


async def test_merged_header_cells(memory: Backend, tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Data"
    ws.append(["id", "Contact", None, "signup"])
    ws.merge_cells("B1:C1")
    ws.append([1, "Ann", "ann@x.io", "2024-01-01"])
    wb.save(tmp_path / "m.xlsx")
    error = await failure(memory, tmp_path / "m.xlsx", tmp_path)
    assert "merged header cells (B1:C1)" in error and "unmerge them" in error


# -- lies and attacks ----------------------------------------------------------------------------------------------

async def test_absurd_dimension_does_not_allocate_or_hang(memory: Backend, tmp_path: Path) -> None:
    body = (row_xml(1, "id", "name", "email", "signup") + row_xml(2, 1, "Ann", "ann@x.io", 45292)
            + row_xml(1_048_576, 2, "Bob", "bob@x.io", "2024-01-02"))
    src = replace_part(good_book(tmp_path), SHEET, sheet_xml(body, dimension="A1:XFD1048576"))
    started = time.monotonic()
    report = await jobkit.run(jobkit.jobs.excel_import, payload(src, tmp_path), backend=memory, timeout=30)
    assert time.monotonic() - started < 10
    assert (report.rows_imported, report.blank_rows) == (2, 0)
    assert [r[:2] for r in h.table(tmp_path / "w.db")] == [(1, "Ann"), (2, "Bob")]


async def test_row_number_past_excel_limit(memory: Backend, tmp_path: Path) -> None:
    body = row_xml(1, "id", "name", "email", "signup") + row_xml(999_999_999, 1, "Ann", "a@x.io", 45292)
    src = replace_part(good_book(tmp_path), SHEET, sheet_xml(body))
    assert "within Excel's 1,048,576" in await failure(memory, src, tmp_path)


async def test_column_past_excel_limit(memory: Backend, tmp_path: Path) -> None:
    body = row_xml(1, "id", "name", "email", "signup") + '<row r="2"><c r="ZZZZ2"><v>1</v></c></row>'
    src = replace_part(good_book(tmp_path), SHEET, sheet_xml(body))
    assert "cell named 'ZZZZ2'" in await failure(memory, src, tmp_path)


async def test_entity_bomb_in_sheet(memory: Backend, tmp_path: Path) -> None:
    body = row_xml(1, "id", "name", "email", "signup") + row_xml(2, 1, "&lol3;", "a@x.io", 45292)
    src = replace_part(good_book(tmp_path), SHEET, sheet_xml(body, prolog=BOMB))
    assert "declares a DTD or XML entities" in await failure(memory, src, tmp_path)


async def test_entity_bomb_in_workbook_part(memory: Backend, tmp_path: Path) -> None:
    src = good_book(tmp_path)
    with zipfile.ZipFile(src) as z:
        workbook = z.read("xl/workbook.xml").decode()
    root = workbook[workbook.index("<workbook"):]
    src = replace_part(src, "xl/workbook.xml", f'<?xml version="1.0"?>\n{BOMB}{root}'.encode())
    error = await failure(memory, src, tmp_path)
    assert "xl/workbook.xml declares a DTD or XML entities" in error


async def test_entity_bomb_behind_a_long_prolog(memory: Backend, tmp_path: Path) -> None:
    src = good_book(tmp_path)
    padding = "<!--" + "x" * 70_000 + "-->"
    src = replace_part(src, "xl/styles.xml", f'<?xml version="1.0"?>{padding}{BOMB}<styleSheet/>'.encode())
    assert "no XML element in its first 64 KB" in await failure(memory, src, tmp_path)


async def test_utf16_sheet_is_refused(memory: Backend, tmp_path: Path) -> None:
    xml = sheet_xml(row_xml(1, "id")).decode().replace("UTF-8", "UTF-16")
    src = replace_part(good_book(tmp_path), SHEET, xml.encode("utf-16"))
    assert "UTF-16" in await failure(memory, src, tmp_path)


async def test_zip_bomb_ratio(memory: Backend, tmp_path: Path) -> None:
    src = good_book(tmp_path)
    padding = b" " * (20 * 1024 * 1024)
    src = replace_part(src, SHEET, sheet_xml(row_xml(1, "id")) + padding)
    assert src.stat().st_size < 200_000
    error = await failure(memory, src, tmp_path)
    assert "looks like a zip bomb" in error and "refused before expanding it" in error


async def test_expansion_over_the_limit(memory: Backend, tmp_path: Path) -> None:
    src = h.write_big(tmp_path / "big.xlsx", 3000)
    error = await failure(memory, src, tmp_path, limits={"max_uncompressed_mb": 0.5})
    assert "would expand to 0.9 MB, over the 0.5 MB limit" in error and "zip bomb" in error


def test_capped_reader_stops_at_the_cap() -> None:
    reader = CappedReader(io.BytesIO(b"x" * 10_000), cap=4096, what="test.xlsx")
    assert len(reader.read(4096)) == 4096
    with pytest.raises(WorkbookError, match="expands past"):
        reader.read(4096)


# -- the payload names things that do not work ---------------------------------------------------------------------

async def test_bad_row_model_and_destination(memory: Backend, tmp_path: Path) -> None:
    src = good_book(tmp_path)
    assert "row model 'nowhere.models:Thing' is not registered (registered: Customer, Reading)" in await failure(
        memory, src, tmp_path, row_model="nowhere.models:Thing")
    assert "unknown destination 'ftp://x'; known kinds" in await failure(memory, src, tmp_path, destination="ftp://x")
    assert "sqlite:///path/file.db?table=name" in await failure(memory, src, tmp_path, destination="sqlite:///x.db")


async def test_existing_table_without_the_columns(memory: Backend, tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "w.db") as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    error = await failure(memory, good_book(tmp_path), tmp_path)
    assert "exists without column(s) email, signup, balance, active, note" in error


# -- the worker survives all of it ---------------------------------------------------------------------------------

async def test_worker_keeps_running_after_hostile_files(memory: Backend, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xlsx"
    bad.write_text("a,b\n")
    bomb = replace_part(good_book(tmp_path, "bomb.xlsx"), SHEET, sheet_xml(row_xml(1, "id")) + b" " * (5 << 20))
    good = good_book(tmp_path, "fine.xlsx", n=5)
    queue = jobkit.Queue("default", backend=memory)
    async with jobkit.Worker([jobkit.jobs.excel_import], backend=memory, handle_signals=False) as worker:
        jobs = [await queue.add(jobkit.jobs.excel_import, payload(p, tmp_path)) for p in (bad, bomb, good)]
        done = [await jobkit.JobHandle(j, memory).wait(timeout=30) for j in jobs]
        assert [j.state for j in done] == [jobkit.JobState.FAILED, jobkit.JobState.FAILED, jobkit.JobState.COMPLETED]
        assert not worker._runner.done()
    assert done[2].result["rows_imported"] == 5
