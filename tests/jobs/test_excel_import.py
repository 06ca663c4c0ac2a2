"""The Excel import job end to end: real .xlsx files, the real task, through jobkit.run and a destination."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook  # type: ignore[import-untyped]

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import ExcelImport, ImportReport
from jobkit.jobs.excel.sqlite_destination import MARKERS

from . import excel_helpers as h
from .excel_helpers import Customer, customer_rows, table, write_book


def payload(path: Path, db: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "sheet": "Data", "row_model": "Customer",
            "destination": f"sqlite:///{db}?table=customers", **extra}


async def test_import_into_sqlite(any_backend: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "customers.xlsx", customer_rows(1200))
    db = tmp_path / "warehouse.db"
    report = await jobkit.run(jobkit.jobs.excel_import, payload(src, db, batch_size=250), backend=any_backend,
                              timeout=60)
    assert isinstance(report, ImportReport)
    assert (report.rows_read, report.rows_imported, report.rows_rejected, report.errors) == (1200, 1200, 0, [])
    assert report.sheet == "Data" and report.duration_s > 0 and report.error_file is None
    rows = table(db)
    assert len(rows) == 1200
    assert rows[0] == (1, "Name 1", "user1@example.com", "2024-01-02", 1.5, 0, None)
    assert rows[2] == (3, "Name 3", "user3@example.com", "2024-01-04", 4.5, 0, "note 3")
    assert [r[0] for r in rows] == list(range(1, 1201))


def test_task_is_registered_and_typed() -> None:
    task = jobkit.jobs.excel_import
    assert isinstance(task, jobkit.Task)
    assert task.name == "jobkit.jobs.excel_import" and task.queue == "default"
    assert task.payload_type is ExcelImport and task.result_type is ImportReport


async def test_invalid_payload_is_refused_at_enqueue(memory: Backend) -> None:
    with pytest.raises(jobkit.PayloadError, match="on_error"):
        await jobkit.submit(jobkit.jobs.excel_import, {"path": "x.xlsx", "row_model": "Customer",
                                                       "destination": "sqlite:///x.db?table=t", "on_error": "ignore"},
                            backend=memory)
    with pytest.raises(jobkit.PayloadError, match="destination"):
        await jobkit.submit(jobkit.jobs.excel_import, {"path": "x.xlsx", "row_model": "Customer",
                                                       "destination": "warehouse"}, backend=memory)
    assert (await jobkit.Queue("default", backend=memory).counts()).total == 0


async def test_cells_are_coerced_like_a_person_reads_them(memory: Backend, tmp_path: Path) -> None:
    rows = [
        [" 42 ", "Serial Date", "a@x.io", 45292, "1,234.50", "yes", None],     # text numbers, serial date, "yes"
        [43.0, 12345, "b@x.io", dt.datetime(2024, 2, 29), 7, True, ""],      # float id, number as name, blank note
        ["44", "Text Date", "c@x.io", "2024-03-01", None, 0, "  "],           # ISO text date, default balance
        [45, "Dt", "d@x.io", dt.datetime(2024, 3, 2, 0, 0), "\u00a05 ", "no", "kept"],
    ]
    src = write_book(tmp_path / "c.xlsx", rows)
    db = tmp_path / "w.db"
    report = await jobkit.run(jobkit.jobs.excel_import, payload(src, db), backend=memory, timeout=30)
    assert report.rows_rejected == 0, report.errors
    assert table(db) == [
        (42, "Serial Date", "a@x.io", "2024-01-01", 1234.5, 1, None),
        (43, "12345", "b@x.io", "2024-02-29", 7.0, 1, None),
        (44, "Text Date", "c@x.io", "2024-03-01", 0.0, 0, None),
        (45, "Dt", "d@x.io", "2024-03-02", 5.0, 0, "kept"),
    ]


async def test_skip_policy_reports_row_errors_and_writes_error_file(memory: Backend, tmp_path: Path) -> None:
    rows = customer_rows(10)
    rows[2][2] = "not-an-email"          # sheet row 4
    rows[5][3] = "someday"               # sheet row 7
    rows[5][0] = "six"
    rows[8][1] = None                    # sheet row 10: required name missing
    src = write_book(tmp_path / "bad.xlsx", rows)
    wb = load_workbook(src)
    wb["Data"]["A11"].value = "=1+1 looks like a formula"
    wb["Data"]["A11"].data_type = "s"  # text that starts with "=", not a formula
    wb.save(src)
    db = tmp_path / "w.db"
    report = await jobkit.run(jobkit.jobs.excel_import, payload(src, db, error_file=True), backend=memory, timeout=30)
    assert (report.rows_read, report.rows_imported, report.rows_rejected) == (10, 6, 4)
    assert len(table(db)) == 6
    by_row = {(e.row, e.column) for e in report.errors}
    assert by_row == {(4, "email"), (7, "signup"), (7, "id"), (10, "name"), (11, "id")}
    email = next(e for e in report.errors if e.row == 4)
    assert email.field == "email" and email.value == "not-an-email" and "pattern" in email.message
    assert report.error_file == str(tmp_path / "bad.errors.xlsx")
    ws = load_workbook(report.error_file, read_only=True).active
    got = [list(r) for r in ws.iter_rows(values_only=True)]
    assert got[0] == ["Row", *h.HEADERS, "Reason"]
    assert [r[0] for r in got[1:]] == [4, 7, 10, 11]
    assert got[1][3] == "not-an-email" and "email:" in got[1][-1]
    assert got[4][1] == "=1+1 looks like a formula"  # text stays text, never a live formula


async def test_fail_policy_stops_at_first_bad_row(memory: Backend, tmp_path: Path) -> None:
    rows = customer_rows(30)
    rows[24][2] = "broken"  # sheet row 26, in the third batch of 10
    src = write_book(tmp_path / "f.xlsx", rows)
    db = tmp_path / "w.db"
    with pytest.raises(jobkit.JobFailed) as info:
        await jobkit.run(jobkit.jobs.excel_import, payload(src, db, on_error="fail", batch_size=10), backend=memory,
                         timeout=30)
    error = info.value.job.error or ""
    assert "RowsRejected" in error and "row 26, column 'email'" in error and "'broken'" in error
    assert info.value.job.attempts == 1  # not retried
    assert len(table(db)) == 20  # the two committed batches stay; nothing of the failing batch


async def test_max_errors_stops_skip_policy(memory: Backend, tmp_path: Path) -> None:
    rows = customer_rows(20)
    for r in rows[:5]:
        r[2] = "nope"
    src = write_book(tmp_path / "m.xlsx", rows)
    with pytest.raises(jobkit.JobFailed, match=r"5 rows rejected, over max_errors=3"):
        await jobkit.run(jobkit.jobs.excel_import, payload(src, tmp_path / "w.db", max_errors=3), backend=memory,
                         timeout=30)


async def test_python_destination_and_column_mapping(memory: Backend, tmp_path: Path) -> None:
    h.received.clear()
    headers = ["Sensor ID", "Taken At", "Reading (°C)", "Ignored"]
    rows = [["s1", dt.datetime(2024, 5, 1, 12, 30), 21.5, "x"], ["s2", 45413.75, "19,5".replace(",", "."), None]]
    src = write_book(tmp_path / "r.xlsx", rows, headers=headers, sheet="Readings", others=["Notes"])
    report = await jobkit.run(jobkit.jobs.excel_import, {
        "path": str(src), "sheet": 0, "row_model": "Reading",
        "columns": {"Sensor ID": "sensor", "taken at": "taken_at", "Reading (°C)": "value"},
        "destination": "python:collect"}, backend=memory, timeout=30)
    assert report.rows_imported == 2 and report.sheet == "Readings"
    assert [r.model_dump() for r in h.received] == [
        {"sensor": "s1", "taken_at": dt.datetime(2024, 5, 1, 12, 30), "value": 21.5},
        {"sensor": "s2", "taken_at": dt.datetime(2024, 5, 1, 18, 0), "value": 19.5},
    ]


async def test_header_row_blank_rows_and_trailing_columns(memory: Backend, tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Data"
    ws["A1"] = "Customer export, 2024"
    ws.append([])
    ws.append([*h.HEADERS, "Extra"])
    for row in customer_rows(3):
        ws.append(row)
        ws.append([None] * 7)  # blank rows between records
    wb.save(tmp_path / "hdr.xlsx")
    report = await jobkit.run(jobkit.jobs.excel_import, payload(tmp_path / "hdr.xlsx", tmp_path / "w.db",
                                                                  header_row=3), backend=memory, timeout=30)
    assert (report.rows_imported, report.blank_rows) == (3, 3)


async def test_progress_reports_rows_rate_eta_and_batch(memory: Backend, tmp_path: Path) -> None:
    src = h.write_big(tmp_path / "p.xlsx", 3000)
    handle = await jobkit.submit(jobkit.jobs.excel_import, payload(src, tmp_path / "w.db", batch_size=200),
                                 backend=memory)
    seen = [p async for p in handle.progress()]
    report = await handle.result(timeout=60)
    assert report.rows_imported == 3000
    last = seen[-1]
    assert last.percent == 100
    assert last.extra["rows_done"] == 3000 and last.extra["rows_total"] == 3000 and last.extra["batch"] == 15
    assert last.extra["rows_per_second"] > 0 and last.extra["eta_s"] == 0
    middle = [p for p in seen if 0 < p.percent < 100 and p.extra.get("rows_done")]
    assert middle, "no progress between start and end"
    assert {"rows_done", "rows_total", "rows_per_second", "eta_s", "batch"} <= set(middle[0].extra)
    assert middle[0].extra["rows_total"] == 3000 and "rows/s" in middle[0].message


async def test_lost_checkpoint_resumes_from_destination_marker(memory: Backend, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after a batch commits but before its checkpoint: the retry neither loses nor repeats rows."""
    src = h.write_big(tmp_path / "k.xlsx", 1000)
    db = tmp_path / "w.db"
    saves = 0
    real = jobkit.Context.save_checkpoint

    async def flaky(self: jobkit.Context, state: Any) -> None:
        nonlocal saves
        saves += 1
        if saves == 3:
            raise ConnectionError("backend went away after the batch committed")
        await real(self, state)

    monkeypatch.setattr(jobkit.Context, "save_checkpoint", flaky)
    handle = await jobkit.submit(jobkit.jobs.excel_import, payload(src, db, batch_size=100), backend=memory,
                                 backoff=jobkit.Backoff.fixed(0))
    report = await handle.result(timeout=60)
    assert report.attempts == 2 and report.rows_imported == 1000 and report.rows_read == 1000
    assert [r[0] for r in table(db)] == list(range(1, 1001))
    job = await handle.job()
    assert job.checkpoint["next_row"] == 1002 and job.checkpoint["batches"] == 10
    with sqlite3.connect(db) as conn:
        (marker,) = conn.execute(f'SELECT state FROM "{MARKERS}" WHERE job_id = ?', (job.id,)).fetchone()
    assert json.loads(marker) == job.checkpoint  # the marker committed with the last batch


async def test_report_survives_json_round_trip(memory: Backend, tmp_path: Path) -> None:
    rows = customer_rows(3)
    rows[0][4] = float("nan")
    src = write_book(tmp_path / "n.xlsx", rows)
    handle = await jobkit.submit(jobkit.jobs.excel_import, payload(src, tmp_path / "w.db"), backend=memory)
    report = await handle.result(timeout=30)
    assert report.rows_imported + report.rows_rejected == 3
    assert ImportReport.model_validate((await handle.job()).result) == report


async def test_cancel_stops_between_batches(memory: Backend, tmp_path: Path) -> None:
    src = h.write_big(tmp_path / "c.xlsx", 20000)
    db = tmp_path / "w.db"
    handle = await jobkit.submit(jobkit.jobs.excel_import, payload(src, db, batch_size=100), backend=memory)
    async for p in handle.progress():
        if p.extra.get("batch", 0) >= 2:
            break
    await handle.cancel()
    job = await handle.wait(timeout=30)
    assert job.state is jobkit.JobState.CANCELLED
    assert 200 <= len(table(db)) < 20000


def test_payload_defaults() -> None:
    p = ExcelImport(path="a.xlsx", row_model="m:M", destination="sqlite:///a.db?table=t")
    assert (p.sheet, p.batch_size, p.on_error, p.max_errors, p.error_file) == (0, 500, "skip", 1000, False)
    assert Customer.model_fields["balance"].default == 0.0
    _ = asyncio  # the tests above are async; keep the import explicit for readers


async def test_shared_strings_as_excel_saves_them(memory: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "s.xlsx", [])  # the 7 headers become shared strings 0-6
    extra = ["<r><t>Ann </t></r><r><rPr><b/></rPr><t>Bold</t></r><rPh><t>phonetic</t></rPh>", "<t>line_x000D_two</t>"]
    h.to_shared_strings(src, extra)
    rows = "".join(f'<row r="{r}"><c r="A{r}"><v>{r}</v></c><c r="B{r}" t="s"><v>{index}</v></c>'
                   f'<c r="C{r}" t="inlineStr"><is><t>p{r}@x.io</t></is></c><c r="D{r}"><v>45292</v></c></row>'
                   for r, index in ((2, 7), (3, 8)))
    h.replace_part(src, "xl/worksheets/sheet1.xml", h.sheet_xml(h.row_xml(1, "id", "name", "email", "signup") + rows))
    db = tmp_path / "w.db"
    report = await jobkit.run(jobkit.jobs.excel_import, payload(src, db), backend=memory, timeout=30)
    assert report.rows_imported == 2, report.errors
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM customers ORDER BY id")]
    assert names == ["Ann Bold", "line\rtwo"]


async def test_shared_strings_round_trip_a_whole_sheet(memory: Backend, tmp_path: Path) -> None:
    src = h.to_shared_strings(write_book(tmp_path / "t.xlsx", customer_rows(300)))
    with zipfile.ZipFile(src) as z:
        assert b't="s"' in z.read("xl/worksheets/sheet1.xml")
    db = tmp_path / "w.db"
    report = await jobkit.run(jobkit.jobs.excel_import, payload(src, db), backend=memory, timeout=30)
    assert report.rows_imported == 300
    assert table(db)[2] == (3, "Name 3", "user3@example.com", "2024-01-04", 4.5, 0, "note 3")
