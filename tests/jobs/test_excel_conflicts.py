"""The Excel import's table destinations resolve key conflicts; PostgreSQL databases the worker registered."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import ImportReport

from .conftest import Db
from .excel_helpers import customer_rows, write_book


def destination(db: Db) -> str:
    return ("postgresql://pg" if db.kind == "postgresql" else db.ref) + "?table=customers"


async def run(backend: Backend, db: Db, path: Path, **extra: Any) -> ImportReport:
    report = await jobkit.run(jobkit.jobs.excel_import, {"path": str(path), "sheet": "Data", "row_model": "Customer",
                                                         "destination": destination(db), **extra},
                              backend=backend, timeout=60)
    assert isinstance(report, ImportReport)
    return report


async def test_reimport_into_a_keyed_table_upserts(memory: Backend, db: Db, tmp_path: Path) -> None:
    first = write_book(tmp_path / "a.xlsx", customer_rows(30))
    report = await run(memory, db, first, key=["id"], batch_size=10)
    assert (report.rows_imported, report.rows_inserted, report.rows_updated) == (30, 30, 0)

    with pytest.raises(jobkit.JobFailed) as info:  # the same file again, as before: the key is taken
        await run(memory, db, first, key=["id"])
    assert "RowsRejected" in (info.value.job.error or "") and "on_conflict='error'" in (info.value.job.error or "")

    changed = customer_rows(35)
    changed[0][1] = "Renamed"
    again = await run(memory, db, write_book(tmp_path / "b.xlsx", changed), key=["id"], on_conflict="upsert",
                      batch_size=10)
    assert (again.rows_imported, again.rows_inserted, again.rows_updated, again.rows_skipped) == (35, 5, 1, 29)
    got = await db.rows("SELECT id, name FROM customers ORDER BY id")
    assert len(got) == 35 and got[0] == (1, "Renamed")

    skipped = await run(memory, db, write_book(tmp_path / "c.xlsx", customer_rows(35)), on_conflict="skip")
    assert (skipped.rows_inserted, skipped.rows_skipped) == (0, 35)  # key: the primary key the first run created
    assert (await db.rows("SELECT name FROM customers WHERE id = 1")) == [("Renamed",)]


async def test_postgresql_table_is_created_from_the_row_model(memory: Backend, pg: Db, tmp_path: Path) -> None:
    report = await run(memory, pg, write_book(tmp_path / "p.xlsx", customer_rows(3)), key=["id"])
    assert report.rows_inserted == 3
    assert await pg.rows("SELECT id, name, signup, balance, active, note FROM customers ORDER BY id") == [
        (1, "Name 1", dt.date(2024, 1, 2), 1.5, False, None), (2, "Name 2", dt.date(2024, 1, 3), 3.0, True, None),
        (3, "Name 3", dt.date(2024, 1, 4), 4.5, False, "note 3")]
    types = dict(await pg.rows("SELECT column_name, data_type FROM information_schema.columns WHERE table_name ="
                               " 'customers' AND table_schema = current_schema()"))
    assert types == {"id": "bigint", "name": "text", "email": "text", "signup": "date", "balance": "double precision",
                     "active": "boolean", "note": "text"}
    keys = await pg.rows("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND"
                         " a.attnum = ANY(i.indkey) WHERE i.indrelid = 'customers'::regclass AND i.indisprimary")
    assert keys == [("id",)]


@pytest.mark.parametrize("url", [
    "postgresql://etl:s3cret@db.internal:5432/dw?table=customers",
    "postgres://db.internal/dw?table=customers",
    "postgresql://nobody?table=customers",
])
async def test_a_payload_cannot_point_a_destination_anywhere(memory: Backend, tmp_path: Path, url: str) -> None:
    src = write_book(tmp_path / "x.xlsx", customer_rows(2))
    with pytest.raises(jobkit.JobFailed) as info:
        await jobkit.run(jobkit.jobs.excel_import, {"path": str(src), "sheet": "Data", "row_model": "Customer",
                                                    "destination": url}, backend=memory, timeout=30)
    error = info.value.job.error or ""
    assert "ImportSetupError" in error and "s3cret" not in error and info.value.job.attempts == 1
    assert "register" in error  # says what to do: register the database in the worker, name it


async def test_conflict_options_need_a_table_destination(memory: Backend, tmp_path: Path) -> None:
    src = write_book(tmp_path / "x.xlsx", customer_rows(2))
    with pytest.raises(jobkit.JobFailed, match="resolves no key conflicts"):
        await jobkit.run(jobkit.jobs.excel_import, {"path": str(src), "sheet": "Data", "row_model": "Customer",
                                                    "destination": "python:collect", "on_conflict": "skip"},
                         backend=memory, timeout=30)
