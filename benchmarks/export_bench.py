"""Export speed and memory: jobkit's export job writing .xlsx, .csv and .jsonl, beside pandas.

    python benchmarks/export_bench.py --rows 1000000
    python benchmarks/export_bench.py --rows 100000 --engines jobkit-xlsx,pandas-xlsx

A SQLite table of N rows x 8 columns (int key, three texts, a float, an int, a date, a bool) is built once
(benchmarks/.data/). Each engine runs in its own subprocess; the table gives seconds, rows per second and
peak RSS (VmHWM), the figure the "flat memory" target is about (< 200 MB at 1M rows to .xlsx).

- jobkit-<format>: `jobkit.run(jobkit.jobs.export, {"source": "sqlite:///export.db", "table": "items",
  "path": ...})` on a SQLite jobs database: streamed reads, openpyxl's write-only mode, SHA-256, progress;
- pandas-xlsx / pandas-csv: what people write by hand, `pandas.read_sql` then `DataFrame.to_excel`
  (openpyxl engine) or `to_csv` (pandas is a benchmark-only tool: pip install pandas).
"""

from __future__ import annotations

import argparse
import json
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


def table(rows: int) -> Path:
    """The cached SQLite file with an N-row table `items`."""
    import sqlite3

    path = DATA / f"export-{rows}.db"
    if path.exists():
        return path
    DATA.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    cities = ["Paris", "Lyon", "Oslo", "Rome", "Lima", "Kyiv", "Pune"]
    with sqlite3.connect(tmp) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, email TEXT, city TEXT, amount REAL,"
                     " qty INTEGER, day TEXT, active INTEGER)")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
            (i, f"Customer {i}", f"user{i}@example.com", cities[i % 7], round(i * 1.25 % 5000, 2), i % 100,
             f"2024-{1 + i % 12:02}-{1 + i % 28:02}", i % 3 == 0) for i in range(1, rows + 1)))
    tmp.rename(path)
    return path


def run_jobkit(fmt: str, db: Path, out: Path) -> dict[str, Any]:
    import jobkit
    import jobkit.jobs

    jobkit.jobs.configure(file_roots=[out.parent, db.parent])
    result = jobkit.run_sync(jobkit.jobs.export, {"source": f"sqlite:///{db}", "table": "items", "path": str(out)},
                             backend=f"sqlite:///{out.parent / 'jobs.db'}", timeout=7200)
    return {"bytes": result.bytes, "rows_out": result.rows}


def run_pandas(fmt: str, db: Path, out: Path) -> dict[str, Any]:
    import sqlite3

    import pandas as pd  # type: ignore[import-untyped]

    with sqlite3.connect(db) as conn:
        frame = pd.read_sql("SELECT * FROM items", conn)
    if fmt == "xlsx":
        frame.to_excel(out, index=False, engine="openpyxl")
    else:
        frame.to_csv(out, index=False)
    return {"bytes": out.stat().st_size, "rows_out": len(frame)}


def child(engine: str, db: str, out: str) -> None:
    kind, fmt = engine.split("-")
    started = time.perf_counter()
    extra = (run_jobkit if kind == "jobkit" else run_pandas)(fmt, Path(db), Path(out))
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().splitlines()
    rss = int(next(line.split()[1] for line in status if line.startswith("VmHWM")))
    print(json.dumps({"seconds": seconds, "rss_mb": rss / 1024, **extra}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, action="append")
    ap.add_argument("--engines", default="jobkit-xlsx,jobkit-csv,jobkit-jsonl,pandas-xlsx,pandas-csv")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    results: list[dict[str, Any]] = []
    for n in args.rows or [1_000_000]:
        db = table(n)
        for engine in args.engines.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / f"out.{engine.split('-')[1]}"
                done = subprocess.run([sys.executable, __file__, "--child", engine, str(db), str(out)],
                                      capture_output=True, text=True, cwd=ROOT, timeout=7200,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
                if done.returncode:
                    print(f"{engine} failed:\n{done.stderr[-2000:]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                r.update(engine=engine, rows=n, rows_per_s=n / r["seconds"])
                results.append(r)
                print(f"{n:>9,} {engine:<13} {r['seconds']:8.1f}s {r['rows_per_s']:>9,.0f} rows/s"
                      f" {r['rss_mb']:6.0f} MB {r['bytes'] / 1e6:7.1f} MB file", flush=True)
    report(results)


def report(results: list[dict[str, Any]]) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    lines = [f"# export benchmark {stamp}", "", f"load average at the end: {os.getloadavg()[0]:.2f}", "",
             "| rows | engine | seconds | rows/s | peak RSS (MB) | file (MB) |", "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['rows']:,} | {r['engine']} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['rss_mb']:.0f} |"
              f" {r['bytes'] / 1e6:.1f} |" for r in results]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"export-{stamp}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"export-{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
