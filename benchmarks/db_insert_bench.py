"""DB insert speed: jobkit's db_insert beside a hand-written executemany loop, on SQLite and PostgreSQL.

    python benchmarks/db_insert_bench.py --rows 100000 --rows 1000000

For each size, a JSONL file of N rows x 8 columns (int key, three texts, a float, an int, a date, a bool) is
written once (benchmarks/.data/). Two phases run against a fresh table with a primary key:
- load: every row new (on_conflict="upsert" all the same);
- upsert: the same N keys again, every other row changed (so half are updated, half left as they are).
Each (engine, database, phase) runs in its own subprocess, timed from after its imports (a worker imports
once); the table lists seconds, rows/s and peak RSS. `--repeat N` runs N rounds, the engines interleaved in
each (the machine is shared), and reports medians.

- jobkit: `jobkit.run(jobkit.jobs.db_insert, {"path": ..., "on_conflict": "upsert", "batch_size": 5000})` on a
  SQLite jobs database, so each batch also writes its checkpoint and progress, as in production; lines parsed
  by orjson (the `jobkit[fast]` extra); jobkit-json: the same with `json.loads`, as without the extra;
- executemany: what people write by hand: read the file, `json.loads` each line, `executemany` an
  `INSERT ... ON CONFLICT (id) DO UPDATE` per batch of 5,000 rows and commit (sqlite3, or asyncpg on
  PostgreSQL), without counts, checkpoints or progress.
- jobkit-rows and executemany-rows: the database part alone. The rows are parsed into dicts before the clock
  starts; jobkit-rows is the job's table writer (`open_writer`, `convert`, `write` with its marker, counts,
  duplicates and conflicts settled), executemany-rows the same loop as above; copy-rows (PostgreSQL) the
  ceiling of COPY: typed tuples COPYed per batch, through a temporary table and one INSERT ... ON CONFLICT
  DO UPDATE for the upsert, with no counts, markers, checks or conversion.

PostgreSQL is the server at JOBKIT_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres); the
benchmark creates its own database and drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / ".data"
RESULTS = Path(__file__).resolve().parent / "results"
ADMIN = os.environ.get("JOBKIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
COLUMNS = ["id", "name", "email", "city", "amount", "qty", "day", "active"]
BATCH = 5000
DDL = {"sqlite": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, email TEXT, city TEXT, amount REAL,"
                 " qty INTEGER, day TEXT, active INTEGER)",
       "postgresql": "CREATE TABLE items (id bigint PRIMARY KEY, name text, email text, city text, amount double"
                     " precision, qty integer, day date, active boolean)"}


def data_file(rows: int, phase: str) -> Path:
    """The cached JSONL file: phase "load" as first written, "upsert" with every other row changed."""
    path = DATA / f"insert-{rows}-{phase}.jsonl"
    if path.exists():
        return path
    DATA.mkdir(exist_ok=True)
    cities = ["Paris", "Lyon", "Oslo", "Rome", "Lima", "Kyiv", "Pune"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for i in range(1, rows + 1):
            amount = round(i * 1.25 % 5000, 2) + (1 if phase == "upsert" and i % 2 == 0 else 0)
            f.write(json.dumps({"id": i, "name": f"Customer {i}", "email": f"user{i}@example.com",
                                "city": cities[i % 7], "amount": amount, "qty": i % 100,
                                "day": f"2024-{1 + i % 12:02}-{1 + i % 28:02}", "active": i % 3 == 0}) + "\n")
    tmp.rename(path)
    return path


# -- the engines, each run in a subprocess ----------------------------------------------------------------------

def run_jobkit(db: str, url: str, path: Path, workdir: Path, stdlib_json: bool = False) -> dict[str, Any]:
    import jobkit
    import jobkit.jobs
    import jobkit.jobs.insert.sources

    if stdlib_json:  # as without the jobkit[fast] extra
        jobkit.jobs.insert.sources.parse_json_line = json.loads

    jobkit.jobs.configure(file_roots=[path.parent, workdir])
    destination = "sqlite:///" + str(workdir / "bench.db") if db == "sqlite" else "bench"
    if db == "postgresql":
        jobkit.jobs.register_database("bench", url)
    report = jobkit.run_sync(jobkit.jobs.db_insert, {
        "destination": destination, "table": "items", "path": str(path), "on_conflict": "upsert",
        "batch_size": BATCH}, backend=f"sqlite:///{workdir / 'jobs.db'}", timeout=3600)
    return {"inserted": report.inserted, "updated": report.updated, "skipped": report.skipped}


def _rows(path: Path) -> Any:
    import datetime as dt

    with path.open() as f:
        batch = []
        for line in f:
            r = json.loads(line)
            batch.append((r["id"], r["name"], r["email"], r["city"], r["amount"], r["qty"],
                          dt.date.fromisoformat(r["day"]) if _PG else r["day"], r["active"]))
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


_PG = False
UPSERT = ("INSERT INTO items VALUES ({}) ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,"
          " city = excluded.city, amount = excluded.amount, qty = excluded.qty, day = excluded.day,"
          " active = excluded.active")


def run_executemany(db: str, url: str, path: Path, workdir: Path) -> dict[str, Any]:
    global _PG
    if db == "sqlite":
        import sqlite3

        conn = sqlite3.connect(workdir / "bench.db", isolation_level=None)
        sql = UPSERT.format(", ".join("?" * 8))
        for batch in _rows(path):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
        conn.close()
        return {}
    _PG = True

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        sql = UPSERT.format(", ".join(f"${i}" for i in range(1, 9)))
        for batch in _rows(path):
            async with conn.transaction():
                await conn.executemany(sql, batch)
        await conn.close()

    asyncio.run(go())
    return {}


def run_jobkit_rows(db: str, url: str, records: list[dict[str, Any]], workdir: Path) -> float:
    import jobkit.jobs
    from jobkit.jobs.db import ErrorKinds, conflict_policy, open_writer, resolve_database

    jobkit.jobs.configure(file_roots=[workdir])
    if db == "postgresql":
        jobkit.jobs.register_database("bench", url)
    target = resolve_database("sqlite:///bench.db" if db == "sqlite" else "bench", ValueError)

    async def go() -> float:
        started = time.perf_counter()
        writer = open_writer(target, "items", conflict_policy("upsert", None, None), ErrorKinds(ValueError, ValueError))
        await writer.open(COLUMNS, "bench")
        for i in range(0, len(records), BATCH):
            rows, _ = writer.convert_many([list(map(r.get, COLUMNS)) for r in records[i:i + BATCH]])
            await writer.write(rows, lambda counts, i=i: {"next_row": i + BATCH, "inserted": counts.inserted})
        await writer.close()
        return time.perf_counter() - started

    return asyncio.run(go())


def run_executemany_rows(db: str, url: str, records: list[dict[str, Any]], workdir: Path) -> float:
    import datetime as dt

    def batches() -> Any:
        for i in range(0, len(records), BATCH):
            yield [(r["id"], r["name"], r["email"], r["city"], r["amount"], r["qty"],
                    dt.date.fromisoformat(r["day"]) if db == "postgresql" else r["day"], r["active"])
                   for r in records[i:i + BATCH]]

    started = time.perf_counter()
    if db == "sqlite":
        import sqlite3

        conn = sqlite3.connect(workdir / "bench.db", isolation_level=None)
        sql = UPSERT.format(", ".join("?" * 8))
        for batch in batches():
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
        conn.close()
        return time.perf_counter() - started

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        sql = UPSERT.format(", ".join(f"${i}" for i in range(1, 9)))
        for batch in batches():
            async with conn.transaction():
                await conn.executemany(sql, batch)
        await conn.close()

    asyncio.run(go())
    return time.perf_counter() - started


def run_copy_rows(db: str, url: str, records: list[dict[str, Any]], workdir: Path) -> float:
    """The ceiling of the COPY approach on PostgreSQL: typed tuples COPYed per batch (load), or COPYed into a
    temporary table and moved with one INSERT ... ON CONFLICT DO UPDATE (upsert); no counts, markers or checks."""
    import datetime as dt

    import asyncpg

    tuples = [(r["id"], r["name"], r["email"], r["city"], r["amount"], r["qty"], dt.date.fromisoformat(r["day"]),
               r["active"]) for r in records]

    async def go() -> float:
        conn = await asyncpg.connect(url)
        started = time.perf_counter()
        empty = not await conn.fetchval("SELECT EXISTS (SELECT FROM items)")
        await conn.execute("CREATE TEMP TABLE stage (LIKE items) ON COMMIT DELETE ROWS")
        upsert = UPSERT.replace("VALUES ({})", "SELECT * FROM stage")
        for i in range(0, len(tuples), BATCH):
            async with conn.transaction():
                await conn.copy_records_to_table("items" if empty else "stage", records=tuples[i:i + BATCH])
                if not empty:
                    await conn.execute(upsert)
        seconds = time.perf_counter() - started
        await conn.close()
        return seconds

    return asyncio.run(go())


def child(engine: str, db: str, url: str, path: str, workdir: str) -> None:
    import sqlite3  # noqa: F401 - imports are a worker's one-off cost: all of them before the clock starts

    import asyncpg  # noqa: F401

    import jobkit.jobs  # noqa: F401

    extra: dict[str, Any] = {}
    if engine.endswith("-rows"):
        with open(path) as f:
            records = [json.loads(line) for line in f]
        run = {"jobkit-rows": run_jobkit_rows, "executemany-rows": run_executemany_rows,
               "copy-rows": run_copy_rows}[engine]
        seconds = run(db, url, records, Path(workdir))
    else:
        started = time.perf_counter()
        if engine.startswith("jobkit"):
            extra = run_jobkit(db, url, Path(path), Path(workdir), stdlib_json=engine == "jobkit-json")
        else:
            extra = run_executemany(db, url, Path(path), Path(workdir))
        seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().splitlines()
    rss = int(next(line.split()[1] for line in status if line.startswith("VmHWM")))
    print(json.dumps({"seconds": seconds, "rss_mb": rss / 1024, **extra}))


# -- the driver -------------------------------------------------------------------------------------------------

def admin(sql: str, url: str = ADMIN) -> None:
    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def fresh_table(db: str, url: str, workdir: Path) -> None:
    if db == "sqlite":
        import sqlite3

        (workdir / "bench.db").unlink(missing_ok=True)
        with sqlite3.connect(workdir / "bench.db") as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(DDL["sqlite"])
    else:
        admin("DROP TABLE IF EXISTS items, _jobkit_imports", url)
        admin(DDL["postgresql"], url)


def measure(engine: str, db: str, url: str, path: Path, workdir: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", engine, db, url, str(path), str(workdir)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         timeout=7200)
    if out.returncode:
        raise SystemExit(f"{engine} on {db} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, action="append")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--engines", default="jobkit,jobkit-json,executemany,jobkit-rows,executemany-rows,copy-rows")
    ap.add_argument("--repeat", type=int, default=1, help="rounds, engines interleaved in each; medians reported")
    ap.add_argument("--child", nargs=5)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = args.rows or [100_000, 1_000_000]
    dbname = f"jobkit_bench_{uuid.uuid4().hex[:8]}"
    pg_url = ADMIN.rpartition("/")[0] + f"/{dbname}"
    if "postgresql" in args.db:
        admin(f'CREATE DATABASE "{dbname}"')
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            for n, _round, db in itertools.product(sizes, range(args.repeat), args.db.split(",")):
                files = {phase: data_file(n, phase) for phase in ("load", "upsert")}
                for engine in args.engines.split(","):
                    if engine == "copy-rows" and db == "sqlite":
                        continue  # COPY is PostgreSQL's
                    fresh_table(db, pg_url, workdir)
                    (workdir / "jobs.db").unlink(missing_ok=True)
                    for phase in ("load", "upsert"):
                        r = measure(engine, db, pg_url, files[phase], workdir)
                        r.update(rows=n, db=db, engine=engine, phase=phase, rows_per_s=n / r["seconds"])
                        rows.append(r)
                        print(f"{n:>9,} {db:<10} {phase:<6} {engine:<16} {r['seconds']:8.2f}s"
                              f" {r['rows_per_s']:>10,.0f} rows/s {r['rss_mb']:6.0f} MB", flush=True)
    finally:
        if "postgresql" in args.db:
            admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    report(rows)


def report(rows: list[dict[str, Any]]) -> None:
    """Medians over the rounds; each engine's ratio is its executemany peer's median time over its own."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    runs: dict[tuple[int, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        runs.setdefault((r["rows"], r["db"], r["phase"], r["engine"]), []).append(r)
    median = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    lines = [f"# db_insert benchmark {stamp}", "", f"load average before the end: {os.getloadavg()[0]:.2f};"
             f" medians of {max(map(len, runs.values()))} interleaved rounds", "",
             "| rows | database | phase | engine | seconds (median) | range | rows/s | vs its executemany |"
             " peak RSS (MB) |", "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for (n, db, phase, engine), v in sorted(runs.items(), key=lambda kv: kv[0][:3]):
        peer = median.get((n, db, phase, "executemany-rows" if engine.endswith("-rows") else "executemany"))
        seconds = median[(n, db, phase, engine)]
        ratio = f"{peer / seconds:.2f}x" if peer else ""
        low, high = min(r["seconds"] for r in v), max(r["seconds"] for r in v)
        lines.append(f"| {n:,} | {db} | {phase} | {engine} | {seconds:.2f} | {low:.2f}-{high:.2f} |"
                     f" {n / seconds:,.0f} | {ratio} | {max(r['rss_mb'] for r in v):.0f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"db-insert-{stamp}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"db-insert-{stamp}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
