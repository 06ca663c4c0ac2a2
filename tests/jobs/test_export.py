"""The export job end to end: a real SQLite file and a real PostgreSQL, into real .xlsx, .csv and .jsonl files."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook  # type: ignore[import-untyped]

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import ExportResult

from .conftest import Db

SEED = [(1, "ann", "u1", 10.5, "2024-01-05"), (2, "=HYPERLINK(\"x\")", "u2", -3.0, "2024-02-01"),
        (3, "bob", "u1", 0.0, "2024-03-10"), (4, "x'; DROP TABLE orders; --", "u2", 7.25, "2024-03-11")]


async def seed(db: Db) -> None:
    date = "date" if db.kind == "postgresql" else "text"
    await db.execute(f"CREATE TABLE orders (id integer PRIMARY KEY, name text, owner text, amount double precision,"
                     f" day {date})")
    values = ", ".join(f"({i}, '{n.replace(chr(39), chr(39) * 2)}', '{o}', {a}, '{d}')" for i, n, o, a, d in SEED)
    await db.execute(f"INSERT INTO orders VALUES {values}")


async def export(backend: Backend, **payload: Any) -> ExportResult:
    result = await jobkit.run(jobkit.jobs.export, payload, backend=backend, timeout=60)
    assert isinstance(result, ExportResult)
    return result


async def refused(backend: Backend, **payload: Any) -> str:
    with pytest.raises(jobkit.JobFailed) as info:
        await jobkit.run(jobkit.jobs.export, payload, backend=backend, timeout=60)
    assert info.value.job.attempts == 1, "a setup error is not retried"
    return info.value.job.error or ""


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


async def test_table_to_csv_with_filters_order_and_limit(memory: Backend, db: Db, tmp_path: Path) -> None:
    await seed(db)
    result = await export(memory, source=db.ref, table="orders", columns=["id", "name", "amount"], path="o.csv",
                          where=[{"column": "amount", "op": ">=", "value": 0}], order_by=["-id"], limit=2)
    assert (result.rows, result.columns, result.format) == (2, ["id", "name", "amount"], "csv")
    assert result.path == str(tmp_path / "o.csv") and result.sha256 == sha256(result.path)
    assert result.bytes == (tmp_path / "o.csv").stat().st_size
    with open(result.path, newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["id", "name", "amount"], ["4", "x'; DROP TABLE orders; --", "7.25"],
                                       ["3", "bob", "0.0"]]


async def test_filter_values_are_parameters_never_sql(memory: Backend, db: Db) -> None:
    await seed(db)
    hostile = "x'; DROP TABLE orders; --"
    result = await export(memory, source=db.ref, table="orders", path="h.jsonl",
                          where=[{"column": "name", "value": hostile}, {"column": "id", "op": "in", "value": [4, 9]}])
    assert result.rows == 1
    assert json.loads(Path(result.path).read_text())["name"] == hostile
    assert (await db.rows("SELECT count(*) FROM orders")) == [(4,)]


async def test_jsonl_keeps_types_readable(memory: Backend, db: Db) -> None:
    await seed(db)
    result = await export(memory, source=db.ref, table="orders", path="all.jsonl", order_by=["id"])
    lines = [json.loads(line) for line in Path(result.path).read_text().splitlines()]
    assert lines[0] == {"id": 1, "name": "ann", "owner": "u1", "amount": 10.5, "day": "2024-01-05"}
    assert len(lines) == 4


async def test_xlsx_text_stays_text_and_dates_are_dates(memory: Backend, pg: Db) -> None:
    await seed(pg)
    await pg.execute("ALTER TABLE orders ADD COLUMN at timestamptz DEFAULT '2024-05-01 12:00:00+02'")
    result = await export(memory, source=pg.ref, table="orders", order_by=["id"], path="o.xlsx", sheet="Orders")
    ws = load_workbook(result.path).active
    assert ws.title == "Orders"
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    assert rows[0] == ["id", "name", "owner", "amount", "day", "at"]
    assert rows[2][1] == '=HYPERLINK("x")' and ws["B3"].data_type == "s"  # never a live formula
    assert rows[1][4] == dt.datetime(2024, 1, 5) and rows[1][5] == dt.datetime(2024, 5, 1, 10, 0)  # UTC
    assert result.rows == 4 and result.sheets == 1 and result.sha256 == sha256(result.path)


async def test_xlsx_continues_on_a_new_sheet_past_the_row_limit(memory: Backend, db: Db,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from jobkit.jobs.exports import formats

    monkeypatch.setattr(formats, "SHEET_ROWS", 3)  # 2 rows and the header per sheet
    await seed(db)
    await db.execute("INSERT INTO orders (id, name, owner, amount) VALUES (5, 'eve', 'u3', 1)")
    result = await export(memory, source=db.ref, table="orders", columns=["id"], order_by=["id"], path="s.xlsx")
    book = load_workbook(result.path)
    assert book.sheetnames == ["Export", "Export (2)", "Export (3)"] and result.sheets == 3
    assert [[c for (c,) in ws.iter_rows(values_only=True)] for ws in book] == [["id", 1, 2], ["id", 3, 4], ["id", 5]]


async def test_csv_escapes_text_a_spreadsheet_would_run(memory: Backend, db: Db) -> None:
    await seed(db)
    result = await export(memory, source=db.ref, table="orders", columns=["name"], where=[
        {"column": "id", "value": 2}], path="f.csv")
    assert Path(result.path).read_text().splitlines()[1] == '"\'=HYPERLINK(""x"")"'
    raw = await export(memory, source=db.ref, table="orders", columns=["name"], where=[{"column": "id", "value": 2}],
                       path="raw.csv", escape_formulas=False)
    assert Path(raw.path).read_text().splitlines()[1] == '"=HYPERLINK(""x"")"'


async def test_an_export_never_replaces_a_file(memory: Backend, db: Db, tmp_path: Path) -> None:
    await seed(db)
    (tmp_path / "keep.csv").write_text("someone else's")
    error = await refused(memory, source=db.ref, table="orders", path="keep.csv")
    assert "already exists" in error and (tmp_path / "keep.csv").read_text() == "someone else's"
    assert "outside the file roots" in await refused(memory, source=db.ref, table="orders", path="../x.csv")


async def test_names_the_payload_cannot_use(memory: Backend, db: Db) -> None:
    await seed(db)
    assert "no column 'password'" in await refused(memory, source=db.ref, table="orders", columns=["password"])
    assert "must be letters" in await refused(memory, source=db.ref, table="orders", columns=["id; DROP"])
    assert "does not exist" in await refused(memory, source=db.ref, table="nothing")
    assert "raw SQL is not allowed" in await refused(memory, source=db.ref, sql="SELECT * FROM orders")
    assert "not registered" in await refused(memory, query="nope")
    error = await refused(memory, source="postgresql://etl:s3cret@db.example/dw", table="orders")
    assert "never carries an address or credentials" in error and "s3cret" not in error


async def test_registered_query_with_typed_parameters(memory: Backend, db: Db) -> None:
    await seed(db)
    jobkit.jobs.register_query("orders_since", db.ref, "SELECT id, name FROM orders WHERE day >= :since AND name <>"
                               " ':since' ORDER BY id -- :not_a_param")
    result = await export(memory, query="orders_since", params={"since": "2024-03-01"}, path="q.jsonl")
    assert [json.loads(x)["id"] for x in Path(result.path).read_text().splitlines()] == [3, 4]
    assert "missing since" in await refused(memory, query="orders_since", params={})
    assert "not in the query: other" in await refused(memory, query="orders_since", params={"since": "2024-01-01",
                                                                                             "other": 1})


async def test_raw_sql_only_where_allowed_and_only_reads(memory: Backend, db: Db, tmp_path: Path) -> None:
    await seed(db)
    target = f"sqlite:///{tmp_path / 'warehouse.db'}" if db.kind == "sqlite" else None
    from jobkit.jobs.db.databases import resolve_database

    jobkit.jobs.register_database("trusted", target or resolve_database("pg", ValueError).target, allow_sql=True)
    result = await export(memory, source="trusted", sql="SELECT owner, sum(amount) AS total FROM orders GROUP BY"
                          " owner ORDER BY owner", path="sum.csv")
    assert Path(result.path).read_text().splitlines() == ["owner,total", "u1,10.5", "u2,4.25"]
    error = await refused(memory, source="trusted", sql="DELETE FROM orders")
    assert (await db.rows("SELECT count(*) FROM orders")) == [(4,)], error


async def test_owner_scoped_exports(memory: Backend, db: Db, tmp_path: Path) -> None:
    await seed(db)
    from jobkit.jobs.db.databases import resolve_database

    url = f"sqlite:///{tmp_path / 'warehouse.db'}" if db.kind == "sqlite" else resolve_database("pg", ValueError).target
    jobkit.jobs.register_database("scoped", url, owner_column="owner", allow_sql=True)
    mine = await export(memory, source="scoped", table="orders", columns=["id"], owner="u1", path="u1.csv")
    assert Path(mine.path).read_text().splitlines() == ["id", "1", "3"] and mine.owner == "u1"
    assert "cannot be exported for an owner" in await refused(memory, source=db.ref, table="orders", owner="u1")
    jobkit.jobs.register_query("my_orders", "scoped", "SELECT id FROM orders WHERE owner = :who ORDER BY id",
                               owner_param="who")
    theirs = await export(memory, query="my_orders", owner="u2", path="u2.csv")
    assert Path(theirs.path).read_text().splitlines() == ["id", "2", "4"]
    assert "a payload cannot set it" in await refused(memory, query="my_orders", owner="u2", params={"who": "u1"})
    assert "cannot be scoped" in await refused(memory, source="scoped", sql="SELECT 1", owner="u1")


async def test_a_retry_after_publishing_returns_the_published_file(memory: Backend, db: Db,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    await seed(db)
    from jobkit.jobs.exports import exporter

    real, calls = exporter.publish_new, []

    def publish_then_crash(tmp: Path, target: Path) -> None:
        real(tmp, target)
        calls.append(target)
        if len(calls) == 1:
            raise ConnectionError("worker lost after publishing")

    monkeypatch.setattr(exporter, "publish_new", publish_then_crash)
    handle = await jobkit.submit(jobkit.jobs.export, {"source": db.ref, "table": "orders", "path": "once.csv"},
                                 backend=memory, backoff=jobkit.Backoff.fixed(0))
    result = await handle.result(timeout=60)
    assert result.attempts == 2 and len(calls) == 1, "the retry published nothing again"
    assert result.rows == 4 and result.sha256 == sha256(result.path)


async def test_progress_and_default_path(memory: Backend, db: Db, tmp_path: Path, watch: Any) -> None:
    await seed(db)
    async with watch(memory, "default") as w:
        result = await export(memory, source=db.ref, table="orders", batch_size=1)
        seen = await w.until(lambda e: e.progress is not None and e.progress.extra.get("rows_done") == 4)
    assert seen[0].progress is not None and seen[0].progress.extra["rows_total"] == 4
    assert Path(result.path).parent == tmp_path and Path(result.path).name.startswith("orders-")
    assert result.format == "xlsx"


def test_defaults_follow_the_production_policy() -> None:
    task = jobkit.jobs.export
    assert task.name == "jobkit.jobs.export" and task.options.attempts == 3
    assert [task.options.backoff.seconds(n) for n in (1, 2)] == [5.0, 15.0]
