"""Excel import speed and memory: jobkit's excel_import beside pandas (openpyxl engine) and python-calamine.

    python benchmarks/excel_import_bench.py --rows 100000 --rows 1000000

Generates N-row x 10-column workbooks with openpyxl's write-only mode (cached in benchmarks/.data/),
then runs each reader in its own subprocess and reports rows per second and peak RSS (VmHWM).
pandas and python-calamine are benchmark-only tools, not jobkit dependencies:
    pip install pandas python-calamine
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

DATA = Path(__file__).resolve().parent / ".data"
HEADERS = ["id", "name", "email", "city", "amount", "quantity", "signup", "active", "score", "note"]
ENGINES = ["jobkit", "jobkit-reader", "pandas", "calamine"]


class Row(BaseModel):
    id: int
    name: str
    email: str
    city: str
    amount: float
    quantity: int
    signup: dt.date
    active: bool
    score: float
    note: str | None = None


def workbook(rows: int, shared: bool = False) -> Path:
    """The cached N-row workbook, written on first use: strings inline as openpyxl writes them, or `shared`
    in a shared string table as Excel saves them."""
    from openpyxl import Workbook  # type: ignore[import-untyped]

    path = DATA / f"bench-{rows}{'-shared' if shared else ''}.xlsx"
    if path.exists():
        return path
    if shared:
        return _share_strings(workbook(rows), path)
    DATA.mkdir(exist_ok=True)
    rnd = random.Random(42)
    cities = ["Paris", "Lyon", "Oslo", "Rome", "Lima", "Kyiv", "Pune"]
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Data")
    ws.append(HEADERS)
    start = dt.date(2020, 1, 1)
    for i in range(1, rows + 1):
        ws.append([i, f"Customer {i}", f"user{i}@example.com", cities[i % len(cities)], round(rnd.uniform(0, 5000), 2),
                   rnd.randint(1, 100), start + dt.timedelta(days=i % 1800), i % 3 == 0, rnd.random(),
                   None if i % 4 else f"note {i % 97}"])
    tmp = path.with_suffix(".tmp")
    wb.save(tmp)
    tmp.rename(path)
    return path


def _share_strings(src: Path, dst: Path) -> Path:
    """Move every inline string into xl/sharedStrings.xml, as Excel would have saved the file."""
    import re
    import zipfile

    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    table: dict[str, int] = {}

    def shared(m: re.Match[str]) -> str:
        return f'<c r="{m.group(1)}" t="s"><v>{table.setdefault(m.group(2), len(table))}</v></c>'

    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst.with_suffix(".tmp"), "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            data = z.read(info).decode()
            if info.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(r'<c r="([A-Z]+\d+)" t="inlineStr"><is><t>(.*?)</t></is></c>', shared, data)
            elif info.filename == "[Content_Types].xml":
                data = data.replace("</Types>", '<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
                                    'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
            elif info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace("</Relationships>", '<Relationship Id="rIdSST" Type="http://schemas.openxmlformats'
                                    '.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
                                    "</Relationships>")
            out.writestr(info.filename, data)
        items = "".join(f"<si><t>{text}</t></si>" for text in table)
        out.writestr("xl/sharedStrings.xml", f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{ns}" count='
                     f'"{len(table)}" uniqueCount="{len(table)}">{items}</sst>')
    dst.with_suffix(".tmp").rename(dst)
    return dst


# -- one measurement, in a child process ------------------------------------------------------------------------------

def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_jobkit(path: Path) -> int:
    import jobkit
    import jobkit.jobs

    jobkit.jobs.register_row_model(Row, "bench.Row")
    with tempfile.TemporaryDirectory() as tmp:
        jobkit.jobs.configure(file_roots=[path.parent, tmp])  # the workbooks, and the destination database
        payload = {"path": str(path), "sheet": "Data", "row_model": "bench.Row",
                   "destination": f"sqlite:///{tmp}/bench.db?table=rows"}
        report = asyncio.run(jobkit.run(jobkit.jobs.excel_import, payload, backend="memory://"))
    assert report.rows_rejected == 0, report.errors[:3]
    return report.rows_imported


def _run_reader(path: Path) -> int:
    from jobkit.jobs.excel.reader import Workbook

    with Workbook(path) as wb:
        rows, source = wb.rows(wb.sheet("Data"))
        n = sum(1 for _ in rows) - 1
        source.close()
    return n


def _run_pandas(path: Path) -> int:
    import pandas as pd

    return len(pd.read_excel(path, sheet_name="Data", engine="openpyxl"))


def _run_calamine(path: Path) -> int:
    from python_calamine import CalamineWorkbook

    return len(CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Data").to_python()) - 1


def child(engine: str, path: Path) -> None:
    run = {"jobkit": _run_jobkit, "jobkit-reader": _run_reader, "pandas": _run_pandas, "calamine": _run_calamine}
    started = time.perf_counter()
    rows = run[engine](path)
    seconds = time.perf_counter() - started
    print(json.dumps({"engine": engine, "rows": rows, "seconds": seconds, "peak_mb": _peak_mb()}))


# -- the parent: one subprocess per measurement ----------------------------------------------------------------------

def measure(engine: str, path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", engine, str(path)], capture_output=True, text=True,
                         check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        return {"engine": engine, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="rows per workbook (repeatable; default 100000)")
    parser.add_argument("--engine", action="append", choices=ENGINES, help="engines to run (default: all)")
    parser.add_argument("--shared", action="store_true", help="strings in a shared string table, as Excel saves")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    for rows in args.rows or [100_000]:
        started = time.perf_counter()
        path = workbook(rows, shared=args.shared)
        print(f"\n{rows:,} rows x 10 columns: {path.name}, {path.stat().st_size / 2**20:.1f} MB"
              f" (ready in {time.perf_counter() - started:.0f}s)", flush=True)
        print("| engine | seconds | rows/s | peak RSS (MB) |\n|---|---:|---:|---:|", flush=True)
        results = []
        for engine in args.engine or ENGINES:
            r = measure(engine, path)
            results.append(r)
            if "error" in r:
                print(f"| {engine} | failed: {r['error']} | | |", flush=True)
            else:
                print(f"| {engine} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['peak_mb']:.0f} |", flush=True)
        (DATA / f"results-{path.stem}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
