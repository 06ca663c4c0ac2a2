"""Aggregation speed and memory: jobkit's aggregate flow beside the same DuckDB query run directly, and pandas.

    python benchmarks/aggregate_bench.py                      # 10M events, a year by day, about 3 minutes
    python benchmarks/aggregate_bench.py --events 1000000 --engines duckdb,jobkit-month

A year (2024) of N synthetic events (timestamp, one of 20 countries, a user id, an amount) is generated once into
a Parquet file sorted by time (benchmarks/.data/, by DuckDB). Every engine computes the same rows, a year by UTC
day and country, with count, sum(amount) and avg(amount) ("basic") or also count_distinct(user_id) and
p95(amount) ("full"), in its own subprocess; the table gives seconds, the ratio to the same query jobkit runs,
run directly (duckdb-same), and
peak RSS (VmHWM). Each engine's rows are checked to equal DuckDB's. Seconds cover the aggregation only, after
imports (a worker has jobkit imported and running already): DuckDB's connect and query; jobkit from adding the
flow to the parent's report; pandas' read and groupby.

- duckdb-same: the query jobkit's partitions run (periods found by a balanced CASE over the day edges), over the
  whole year at once on one DuckDB connection: the base of the ratios, so the ratio is what partitioning and the
  queue cost.
- duckdb-epoch: `SELECT <day>, country, ... GROUP BY ALL` over read_parquet, the day computed from the epoch in
  integers (right for UTC days only): the fastest direct query we found.
- duckdb-trunc: the same with `date_trunc('day', ts)`, as most would write it (on a TIMESTAMPTZ it goes through
  ICU's calendar, which is slower).
- jobkit-day: `jobkit.jobs.aggregate_flow(...)` with partition=day (365 child jobs), on a memory backend served
  by one in-process Worker (concurrency 2, one per core), from adding the flow to the parent's report.
- jobkit-month: the same with partition=month and bucket=day: 12 child jobs, each reading a month.
- pandas: `read_parquet(columns)` then `groupby([day, country]).agg(...)` (pandas and pyarrow are benchmark-only
  tools: pip install pandas pyarrow).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / ".data"
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = {"basic": ["count", "sum(amount)", "avg(amount)"],
           "full": ["count", "sum(amount)", "avg(amount)", "count_distinct(user_id)", "p95(amount)"]}
DAYS = {"duckdb-trunc": "date_trunc('day', ts)",  # as most would write it: on a TIMESTAMPTZ, through ICU's calendar
        "duckdb-epoch": "make_timestamp(epoch_us(ts) // 86400000000 * 86400000000)"}  # the fastest we found: integers
SQL = {"count": "count(*)", "sum(amount)": "sum(amount)", "avg(amount)": "avg(amount)",
       "count_distinct(user_id)": "count(DISTINCT user_id)", "p95(amount)": "quantile_cont(amount, 0.95)"}


def events(n: int) -> Path:
    """The cached Parquet file of n events over 2024, sorted by time (so a reader skips row groups by range)."""
    import duckdb

    path = DATA / f"events-{n}.parquet"
    if path.exists():
        return path
    DATA.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SELECT setseed(0.42)")
    countries = "['US','DE','FR','GB','JP','BR','IN','CN','IT','ES','CA','AU','MX','KR','NL','SE','PL','NG','ZA','AR']"
    con.execute(f"""COPY (
        SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_microseconds(CAST(random() * 366 * 86400e6 AS BIGINT)) AS ts,
               {countries}[1 + CAST(floor(random() * 20) AS INTEGER)] AS country,
               CAST(floor(random() * 100000) AS INTEGER) AS user_id,
               round(random() * 200, 2) AS amount
        FROM range({n}) ORDER BY ts) TO '{tmp}' (FORMAT parquet)""")
    con.close()
    tmp.rename(path)
    return path


Timed = tuple[list[tuple[Any, ...]], float]  # the rows, and the seconds the aggregation took


def run_duckdb(path: Path, metrics: list[str], day: str) -> Timed:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cols = ", ".join(f"{SQL[m]} AS m{i}" for i, m in enumerate(metrics))
    names = ", ".join(f"m{i}" for i in range(len(metrics)))
    rows = con.execute(f"SELECT strftime(day, '%Y-%m-%d'), country, {names} FROM (SELECT {day} AS day, country,"
                       f" {cols} FROM"
                       f" read_parquet('{path}') WHERE ts >= TIMESTAMPTZ '2024-01-01 00:00:00+00' AND ts <"
                       " TIMESTAMPTZ '2025-01-01 00:00:00+00' GROUP BY ALL) ORDER BY 1, 2").fetchall()
    return rows, time.perf_counter() - started


def run_same(path: Path, metrics: list[str]) -> Timed:
    """The query jobkit's partitions run, over the whole year at once on one DuckDB connection."""
    import duckdb

    from jobkit.jobs.analytics.calendar import cuts
    from jobkit.jobs.analytics.models import Aggregate
    from jobkit.jobs.analytics.sql import Dialect, Query, TimeColumn, partition_sql

    p = Aggregate.model_validate({"files": [path.name], "time_column": "ts", "start": "2024-01-01",
                                  "end": "2025-01-01", "partition": "month", "bucket": "day",
                                  "group_by": ["country"], "metrics": metrics})
    edges = cuts(*p.bounds(), "day", p.tz, 1000)
    q = partition_sql(p, Dialect("duckdb", lambda n: f"${n}"), Query(f"read_parquet(['{path}']) AS src"),
                      TimeColumn('"ts"', "aware"), ["ts", "country", "user_id", "amount"], edges)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(q.sql, q.params).fetchall()
    out = sorted((f"{edges[r[0]]:%Y-%m-%d}", *r[1:2 + len(metrics)]) for r in rows)
    return out, time.perf_counter() - started


def run_jobkit(path: Path, metrics: list[str], partition: str) -> Timed:
    import asyncio

    import jobkit
    import jobkit.jobs

    jobkit.jobs.configure(file_roots=[path.parent])

    async def go() -> Any:
        backend = await jobkit.connect("memory://")
        tasks = [jobkit.jobs.aggregate, jobkit.jobs.aggregate_partition]
        async with jobkit.Worker(tasks, backend=backend, concurrency=2, handle_signals=False):  # running already
            started = time.perf_counter()
            handle = await jobkit.jobs.aggregate_flow({
                "files": [path.name], "time_column": "ts", "start": "2024-01-01", "end": "2025-01-01",
                "partition": partition, "bucket": "day", "group_by": ["country"], "metrics": metrics,
                "totals": False}, backend=backend)
            report = await handle.result(timeout=3600)
            return report, time.perf_counter() - started

    report, seconds = asyncio.run(go())
    assert report.completed == report.partitions, report.missing
    return [(r["period"][:10], *list(r.values())[1:]) for r in report.rows], seconds


def run_pandas(path: Path, metrics: list[str]) -> Timed:
    import pandas as pd  # type: ignore[import-untyped]

    started = time.perf_counter()
    frame = pd.read_parquet(path, columns=["ts", "country", "user_id", "amount"])
    frame["day"] = frame["ts"].dt.floor("D").dt.strftime("%Y-%m-%d")
    named = {"count": ("amount", "size"), "sum(amount)": ("amount", "sum"), "avg(amount)": ("amount", "mean"),
             "count_distinct(user_id)": ("user_id", "nunique"),
             "p95(amount)": ("amount", lambda s: s.quantile(0.95))}
    out = frame.groupby(["day", "country"], sort=True).agg(**{f"m{i}": named[m] for i, m in enumerate(metrics)})
    return [tuple(r) for r in out.reset_index().itertuples(index=False)], time.perf_counter() - started


def child(engine: str, path: str, metric_set: str, out: str) -> None:
    metrics = METRICS[metric_set]
    if engine == "duckdb-same":
        rows, seconds = run_same(Path(path), metrics)
    elif engine.startswith("duckdb"):
        rows, seconds = run_duckdb(Path(path), metrics, DAYS[engine])
    elif engine == "pandas":
        rows, seconds = run_pandas(Path(path), metrics)
    else:
        rows, seconds = run_jobkit(Path(path), metrics, engine.split("-")[1])
    status = Path("/proc/self/status").read_text().splitlines()
    rss = int(next(line.split()[1] for line in status if line.startswith("VmHWM")))
    Path(out).write_text(json.dumps([list(r) for r in rows]))
    print(json.dumps({"seconds": seconds, "rss_mb": rss / 1024, "rows_out": len(rows)}))


def same(a: list[list[Any]], b: list[list[Any]]) -> bool:
    def close(x: Any, y: Any) -> bool:
        if isinstance(x, float) or isinstance(y, float):
            return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-6)
        return bool(x == y)
    return len(a) == len(b) and all(len(r) == len(s) and all(map(close, r, s)) for r, s in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--engines", default="duckdb-same,duckdb-epoch,duckdb-trunc,jobkit-month,jobkit-day,pandas")
    ap.add_argument("--metrics", default="basic,full")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine; the median is reported")
    ap.add_argument("--child", nargs=4)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    path = events(args.events)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for metric_set in args.metrics.split(","):
            reference: list[list[Any]] | None = None
            base = None
            for engine in args.engines.split(","):
                runs = []
                for _ in range(args.repeat):
                    out = Path(tmp) / f"{engine}.json"
                    command = [sys.executable, __file__, "--child", engine, str(path), metric_set, str(out)]
                    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=7200,
                                          env={**os.environ, "PYTHONPATH": str(ROOT)})
                    if done.returncode:
                        print(f"{engine} failed:\n{done.stderr[-3000:]}")
                        break
                    runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                if not runs:
                    continue
                rows = json.loads(out.read_text())
                if reference is None:
                    reference = rows
                r = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]
                r.update(engine=engine, metrics=metric_set, events=args.events, equal=same(rows, reference),
                         range_s=[round(min(x["seconds"] for x in runs), 2), round(max(x["seconds"] for x in runs), 2)])
                base = base or r["seconds"]
                r["ratio"] = r["seconds"] / base
                results.append(r)
                print(f"{metric_set:<6} {engine:<13} {r['seconds']:7.2f}s x{r['ratio']:5.2f} {r['rss_mb']:7.0f} MB"
                      f" rows={r['rows_out']:,} equal={r['equal']}", flush=True)
    report(results)


def report(results: list[dict[str, Any]]) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    n = results[0]["events"] if results else 0
    lines = [f"# aggregate benchmark {stamp}", "", f"{n:,} events, a year by day and country; {os.cpu_count()} cores;"
             f" load average at the end: {os.getloadavg()[0]:.2f}", "",
             "| metrics | engine | seconds (median) | range | x DuckDB direct | peak RSS (MB) | rows | same as DuckDB"
             " |",
             "|---|---|---:|---|---:|---:|---:|---|"]
    lines += [f"| {r['metrics']} | {r['engine']} | {r['seconds']:.2f} | {r['range_s'][0]} to {r['range_s'][1]} |"
              f" {r['ratio']:.2f} | {r['rss_mb']:.0f} | {r['rows_out']:,} | {r['equal']} |" for r in results]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"aggregate-{stamp}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"aggregate-{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
