"""The DB insert job end to end on a real SQLite file and a real PostgreSQL: conflicts, duplicates, counts, sources."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import InsertReport

from .conftest import Db

TABLE = "CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)"


def rows(*items: tuple[int, str, int]) -> list[dict[str, Any]]:
    return [{"id": i, "name": n, "qty": q} for i, n, q in items]


async def insert(backend: Backend, db: Db, **payload: Any) -> InsertReport:
    report = await jobkit.run(jobkit.jobs.db_insert, {"destination": db.ref, "table": "items", **payload},
                              backend=backend, timeout=60)
    assert isinstance(report, InsertReport)
    return report


async def failure(backend: Backend, db: Db, **payload: Any) -> jobkit.Job:
    with pytest.raises(jobkit.JobFailed) as info:
        await jobkit.run(jobkit.jobs.db_insert, {"destination": db.ref, "table": "items", **payload}, backend=backend,
                         timeout=60)
    return info.value.job


def counts(r: InsertReport) -> tuple[int, int, int, int]:
    return r.inserted, r.updated, r.skipped, r.duplicates


async def stored(db: Db) -> list[tuple[Any, ...]]:
    return await db.rows("SELECT id, name, qty FROM items ORDER BY id")


async def test_rows_go_in_batch_by_batch_with_counts(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    report = await insert(memory, db, rows=rows(*((i, f"n{i}", i) for i in range(1, 26))), batch_size=10)
    assert counts(report) == (25, 0, 0, 0) and report.rows_read == 25 and report.batches == 3
    assert [(b.first_row, b.last_row, b.inserted) for b in report.batch_counts] == [(1, 10, 10), (11, 20, 10),
                                                                                      (21, 25, 5)]
    assert report.key == ["id"] and report.on_conflict == "error" and report.destination == db.ref
    assert len(await stored(db)) == 25


async def test_on_conflict_error_refuses_the_batch_and_names_the_key(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    await insert(memory, db, rows=rows((1, "a", 1), (2, "b", 2)))
    job = await failure(memory, db, rows=rows((3, "c", 3), (4, "d", 4), (5, "e", 5), (2, "B", 20)), batch_size=2)
    assert "InsertRejected" in (job.error or "") and "on_conflict='error'" in (job.error or "")
    assert "2" in (job.error or "") and job.attempts == 1  # not retried: a retry cannot fix it
    assert await stored(db) == [(1, "a", 1), (2, "b", 2), (3, "c", 3), (4, "d", 4)]  # the first batch stays


async def test_skip_leaves_stored_rows_alone(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    await insert(memory, db, rows=rows((1, "a", 1), (2, "b", 2)))
    report = await insert(memory, db, rows=rows((1, "A", 10), (3, "c", 3), (2, "B", 20)), on_conflict="skip")
    assert counts(report) == (1, 0, 2, 0)
    assert await stored(db) == [(1, "a", 1), (2, "b", 2), (3, "c", 3)]


async def test_upsert_updates_changed_rows_and_counts_unchanged_ones_as_skipped(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    await insert(memory, db, rows=rows((1, "a", 1), (2, "b", 2), (3, "c", 3)))
    report = await insert(memory, db, rows=rows((1, "A", 1), (2, "b", 2), (4, "d", 4)), on_conflict="upsert")
    assert counts(report) == (1, 1, 1, 0)
    assert await stored(db) == [(1, "A", 1), (2, "b", 2), (3, "c", 3), (4, "d", 4)]


async def test_upsert_of_named_columns_keeps_the_others(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    await insert(memory, db, rows=rows((1, "a", 1), (2, "b", 2)))
    report = await insert(memory, db, rows=rows((1, "renamed", 10), (2, "renamed", 2)),
                          on_conflict={"upsert": ["qty"]})
    assert counts(report) == (0, 1, 1, 0)
    assert await stored(db) == [(1, "a", 10), (2, "b", 2)]


@pytest.mark.parametrize(("mode", "duplicates", "expected"), [
    ("upsert", None, [(1, "third", 3), (2, "b", 2)]),    # as if one by one: the last wins
    ("upsert", "first", [(1, "first", 1), (2, "b", 2)]),
    ("skip", None, [(1, "first", 1), (2, "b", 2)]),      # as if one by one: the first stays
    ("skip", "last", [(1, "third", 3), (2, "b", 2)]),
    ("error", "last", [(1, "third", 3), (2, "b", 2)]),   # the batch's own repeats settled, then plain inserts
])
async def test_duplicate_keys_in_one_batch(memory: Backend, db: Db, mode: str, duplicates: str | None,
                                           expected: list[tuple[Any, ...]]) -> None:
    await db.execute(TABLE)
    batch = rows((1, "first", 1), (2, "b", 2), (1, "second", 2), (1, "third", 3))
    report = await insert(memory, db, rows=batch, on_conflict=mode, duplicates=duplicates)
    assert counts(report) == (2, 0, 0, 2)
    assert await stored(db) == expected


async def test_duplicate_keys_refused_when_asked(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    job = await failure(memory, db, rows=rows((1, "a", 1), (1, "b", 2)), on_conflict="upsert", duplicates="error")
    assert "appear more than once in one batch" in (job.error or "") and "id=1 (2 rows)" in (job.error or "")
    assert await stored(db) == []


async def test_composite_key_and_a_unique_index_other_than_the_primary_key(memory: Backend, db: Db) -> None:
    await db.execute("CREATE TABLE items (rid integer PRIMARY KEY, day text, shop text, qty integer);"
                     if db.kind == "sqlite" else
                     "CREATE TABLE items (rid serial PRIMARY KEY, day text, shop text, qty integer)")
    await db.execute("CREATE UNIQUE INDEX items_day_shop ON items (day, shop)")
    sales = [{"day": "2024-01-01", "shop": "a", "qty": 1}, {"day": "2024-01-01", "shop": "b", "qty": 2}]
    await insert(memory, db, rows=sales, key=["day", "shop"], on_conflict="upsert")
    again = [{"day": "2024-01-01", "shop": "a", "qty": 5}, {"day": "2024-01-02", "shop": "a", "qty": 7}]
    report = await insert(memory, db, rows=again, key=["day", "shop"], on_conflict="upsert")
    assert counts(report) == (1, 1, 0, 0)
    assert await db.rows("SELECT day, shop, qty FROM items ORDER BY day, shop") == [
        ("2024-01-01", "a", 5), ("2024-01-01", "b", 2), ("2024-01-02", "a", 7)]


async def test_a_key_without_a_unique_index_is_refused_before_writing(memory: Backend, db: Db) -> None:
    await db.execute("CREATE TABLE items (id integer, name text, qty integer)")
    job = await failure(memory, db, rows=rows((1, "a", 1)), on_conflict="skip")
    assert "InsertSetupError" in (job.error or "") and "no primary key" in (job.error or "")
    job = await failure(memory, db, rows=rows((1, "a", 1)), on_conflict="skip", key=["id"])
    assert "CREATE UNIQUE INDEX" in (job.error or "")
    assert await stored(db) == []


async def test_progress_carries_totals_and_the_last_batch_counts(memory: Backend, db: Db, watch: Any) -> None:
    await db.execute(TABLE)
    await insert(memory, db, rows=rows(*((i, "x", i) for i in range(1, 11))))
    async with watch(memory, "default") as w:
        await insert(memory, db, rows=rows(*((i, "y", i) for i in range(6, 16))), on_conflict="upsert", batch_size=5)
        seen = await w.until(lambda e: e.progress is not None and e.progress.extra.get("batch") == 2)
    assert seen[0].progress is not None
    extra = seen[0].progress.extra
    assert (extra["batch_inserted"], extra["batch_updated"], extra["batch_skipped"]) == (5, 0, 0)
    assert (extra["inserted"], extra["updated"], extra["rows_done"], extra["rows_total"]) == (5, 5, 10, 10)


async def test_rows_from_a_jsonl_file(memory: Backend, db: Db, tmp_path: Path) -> None:
    await db.execute(TABLE)
    lines = [json.dumps({"id": i, "name": f"n{i}", "qty": i}) for i in range(1, 8)]
    lines.insert(3, "")  # blank lines are skipped
    lines.insert(5, "[1, 2]")  # not an object: rejected on line 6
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    report = await insert(memory, db, path="items.jsonl", on_error="skip", batch_size=3)
    assert counts(report) == (7, 0, 0, 0) and report.rejected == 1
    assert [(e.row, e.message) for e in report.errors] == [(6, "line 6 is a JSON list, not an object")]
    assert len(await stored(db)) == 7


async def test_rows_from_a_csv_file_are_typed_by_their_columns(memory: Backend, db: Db, tmp_path: Path) -> None:
    await db.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer, day date, price numeric,"
                     " ok boolean)" if db.kind == "postgresql" else
                     "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, day TEXT, price NUMERIC,"
                     " ok INTEGER)")
    (tmp_path / "items.csv").write_text('\ufeffid,name,qty,day,price,ok\n1,"Smith, Ann",3,2024-02-29,1.50,true\n'
                                        '2,"two\nlines",,2024-03-01,2,false\n', encoding="utf-8")
    report = await insert(memory, db, path="items.csv")
    assert counts(report) == (2, 0, 0, 0)
    got = await db.rows("SELECT id, name, qty, day, price, ok FROM items ORDER BY id")
    if db.kind == "postgresql":
        from decimal import Decimal
        assert got == [(1, "Smith, Ann", 3, dt.date(2024, 2, 29), Decimal("1.50"), True),
                       (2, "two\nlines", None, dt.date(2024, 3, 1), Decimal("2"), False)]
    else:
        assert got == [(1, "Smith, Ann", 3, "2024-02-29", 1.5, "true"), (2, "two\nlines", None, "2024-03-01", 2,
                                                                         "false")]


async def test_a_value_the_column_cannot_take_names_row_and_column(memory: Backend, pg: Db) -> None:
    await pg.execute(TABLE)
    job = await failure(memory, pg, rows=rows((1, "a", 1), (2, "b", "lots")))
    assert "row 2, column 'qty'" in (job.error or "") and "expected an integer" in (job.error or "")
    report = await insert(memory, pg, rows=rows((1, "a", 1), (2, "b", "lots"), (3, "c", "7")), on_error="skip")
    assert counts(report) == (2, 0, 0, 0) and report.rejected == 1
    assert (report.errors[0].row, report.errors[0].column, report.errors[0].value) == (2, "qty", "lots")
    assert await stored(pg) == [(1, "a", 1), (3, "c", 7)]


async def test_keys_outside_the_columns_are_rejected_not_dropped(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    job = await failure(memory, db, rows=[{"id": 1, "name": "a"}, {"id": 2, "name": "b", "colour": "red"}])
    assert "row 2" in (job.error or "") and "'colour'" in (job.error or "")
    assert await stored(db) == []  # the bad row was in the first batch: nothing of it was written



async def test_a_missing_key_is_null_and_a_stranger_in_its_place_is_rejected(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    report = await insert(memory, db, rows=[{"id": 1, "name": "a", "qty": 1}, {"id": 2, "name": "b"},
                                            {"id": 3, "name": "c", "colour": "red"}, {"qty": 4, "name": "d", "id": 4}],
                          on_error="skip")
    assert counts(report) == (3, 0, 0, 0) and report.rejected == 1
    assert [(e.row, e.message) for e in report.errors] == [
        (3, "keys 'colour' are not among the columns written (id, name, qty)")]
    assert await stored(db) == [(1, "a", 1), (2, "b", None), (4, "d", 4)]  # keys in any order


async def test_a_single_column(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    report = await insert(memory, db, rows=[{"id": 7}, {"id": 8}], columns=["id"])
    assert counts(report) == (2, 0, 0, 0)
    assert await stored(db) == [(7, None, None), (8, None, None)]

class Item(BaseModel):
    id: int
    name: str
    qty: int = 0


async def test_rows_checked_by_a_registered_row_model(memory: Backend, db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobkit.jobs.excel.rows import _models
    for registered in ("_by_name", "_by_path"):  # the registration ends with the test
        monkeypatch.setattr(_models, registered, dict(getattr(_models, registered)))
    jobkit.jobs.register_row_model(Item, "InsertItem")
    await db.execute(TABLE)
    report = await insert(memory, db, rows=[{"id": "1", "name": "a"}, {"id": "x", "name": "b"}, {"id": 3, "name": "c",
                                                                                                 "extra": 1}],
                          row_model="InsertItem", on_error="skip")
    assert counts(report) == (2, 0, 0, 0) and [(e.row, e.field) for e in report.errors] == [(2, "id")]
    assert await stored(db) == [(1, "a", 0), (3, "c", 0)]


@jobkit.task(name="tests.db_insert.produce", queue="default")
async def produce(ctx: jobkit.Context, n: int) -> dict[str, Any]:
    return {"rows": [{"id": i, "name": f"p{i}", "qty": i * 2} for i in range(1, n + 1)]}


async def test_rows_from_another_jobs_result(memory: Backend, db: Db) -> None:
    await db.execute(TABLE)
    handle = await jobkit.submit(produce, 4, backend=memory)
    await handle.result(timeout=30)
    report = await insert(memory, db, result_of={"job_id": handle.id})
    assert counts(report) == (4, 0, 0, 0) and report.source == f"the result of job {handle.id!r} of queue 'default'"
    job = await failure(memory, db, result_of={"job_id": "nope"})
    assert "does not exist" in (job.error or "")


async def test_sqlite_parameter_limit_is_respected(memory: Backend, tmp_path: Path) -> None:
    db = Db("sqlite", "sqlite:///wide.db", path=tmp_path / "wide.db")
    cols = [f"c{i}" for i in range(120)]
    await db.execute(f"CREATE TABLE items (id INTEGER PRIMARY KEY, {', '.join(c + ' INTEGER' for c in cols)})")
    wide = [{"id": r, **{c: r * i for i, c in enumerate(cols)}} for r in range(1, 3001)]
    report = await insert(memory, db, rows=wide, batch_size=3000)  # 363,000 parameters in one batch
    assert counts(report) == (3000, 0, 0, 0)
    again = await insert(memory, db, rows=[*wide[:1000], {"id": 1, **dict.fromkeys(cols, 0)}], batch_size=3000,
                         on_conflict="upsert", duplicates="last")
    assert counts(again) == (0, 1, 999, 1)
    assert await db.rows("SELECT count(*), sum(c5) FROM items") == [(3000, 5 * sum(range(2, 3001)))]


def test_defaults_follow_the_production_policy() -> None:
    task = jobkit.jobs.db_insert
    assert task.name == "jobkit.jobs.db_insert" and task.options.attempts == 3
    assert [task.options.backoff.seconds(n) for n in (1, 2)] == [5.0, 15.0]
    p = jobkit.jobs.DbInsert(destination="warehouse", table="t", rows=[])
    assert (p.on_conflict, p.duplicates, p.batch_size, p.on_error) == ("error", None, 5000, "fail")


async def test_payload_needs_exactly_one_source(memory: Backend) -> None:
    with pytest.raises(jobkit.PayloadError, match="exactly one source"):
        await jobkit.submit(jobkit.jobs.db_insert, {"destination": "w", "table": "t", "rows": [], "path": "a.csv"},
                            backend=memory)
    with pytest.raises(jobkit.PayloadError, match="on_conflict"):
        await jobkit.submit(jobkit.jobs.db_insert, {"destination": "w", "table": "t", "rows": [],
                                                    "on_conflict": "replace"}, backend=memory)


@pytest.mark.slow
async def test_an_unreachable_database_is_retried_after_the_default_backoff(memory: Backend, pg: Db) -> None:
    """The production defaults as they are: a refused connection fails attempt 1; attempt 2 comes 5 s later."""
    from jobkit.jobs.db.databases import resolve_database

    await pg.execute(TABLE)
    real = resolve_database("pg", ValueError).target
    jobkit.jobs.register_database("flaky", "postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    handle = await jobkit.submit(jobkit.jobs.db_insert, {"destination": "flaky", "table": "items",
                                                         "rows": rows((1, "a", 1))}, backend=memory)

    async def first_failed() -> jobkit.Job:
        while True:
            job = await handle.job()
            if job.attempts == 1 and job.state is jobkit.JobState.DELAYED:
                return job
            await asyncio.sleep(0.02)

    failed = await asyncio.wait_for(first_failed(), 30)
    assert "Connect" in (failed.error or "") or "refused" in (failed.error or "").lower()
    jobkit.jobs.register_database("flaky", real)  # the database is back
    report = await handle.result(timeout=40)
    done = await handle.job()
    assert report.attempts == 2 and report.inserted == 1
    failed_at = failed.history[-1].at  # the attempt's end: DELAYED, waiting out its backoff
    assert done.started_at is not None and 4.9 <= done.started_at - failed_at < 15.0  # 5 s, to the clock's grain
    assert await stored(pg) == [(1, "a", 1)]


async def test_no_password_in_any_message(memory: Backend, pg_run_database: str, tmp_path: Path) -> None:
    base = pg_run_database.rpartition("/")[0].replace("postgres@", "postgres:hunter2@")
    jobkit.jobs.register_database("bad", f"{base}/no_such_database")  # the worker's DSN, with a password
    job = await failure(memory, Db("postgresql", "bad"), rows=rows((1, "a", 1)))
    assert "InsertSetupError" in (job.error or "") and "no_such_database" in (job.error or "")
    assert "hunter2" not in json.dumps(job.model_dump(mode="json"))  # error, traceback, history, result
    job = await failure(memory, Db("postgresql", f"{base}/x"), rows=rows((1, "a", 1)))  # a payload's DSN
    assert "never carries an address or credentials" in (job.error or "") and "***" in (job.error or "")
    assert "hunter2" not in (job.error or "") and "hunter2" not in (job.traceback or "")
    job = await failure(memory, Db("sqlite", "sqlite:///missing.db"), rows=rows((1, "a", 1)))
    assert "does not exist" in (job.error or "") and not (tmp_path / "missing.db").exists()


def test_without_orjson_lines_are_read_by_json_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from jobkit.jobs.insert import sources

    monkeypatch.setitem(sys.modules, "orjson", None)  # as if not installed: importing it raises ImportError
    assert sources._json_reader() is json.loads


@pytest.mark.parametrize("parser", ["orjson", "json"])
def test_jsonl_lines_read_alike_with_or_without_orjson(parser: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from jobkit.jobs.insert import sources

    if parser == "json":  # as without the jobkit[fast] extra
        monkeypatch.setattr(sources, "parse_json_line", json.loads)
    else:
        pytest.importorskip("orjson")
        assert sources.parse_json_line is not json.loads
    big = 2 ** 70  # past 64 bits: orjson refuses it, json reads it
    (tmp_path / "r.jsonl").write_bytes(b'{"id": 1, "x": NaN}\n{"id": %d, "x": "\\ud800"}\n{"id": 3,\n\n'
                                       b'{"id": 4, "x": [1, {"a": null}]}\n' % big)
    source = sources.JsonlSource(tmp_path / "r.jsonl", "r.jsonl")
    try:
        source.start(0, 0)
        chunk = source.read(10)
    finally:
        source.close()
    (row1, first), *rest = chunk.records
    assert row1 == 1 and first["id"] == 1 and first["x"] != first["x"]  # NaN
    assert [(r, obj) for r, obj in rest] == [(2, {"id": big, "x": "\ud800"}), (5, {"id": 4, "x": [1, {"a": None}]})]
    assert [(e.row, e.message) for e in chunk.errors] == [
        (3, "line 3 is not valid JSON: Expecting property name enclosed in double quotes: line 2 column 1 (char 10)")]
