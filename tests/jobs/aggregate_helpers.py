"""Synthetic events for the aggregation tests, written as a SQLite table, Parquet, CSV or a PostgreSQL table, and
the same aggregation computed directly in Python (the reference every engine must equal)."""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
Event = tuple[dt.datetime, str, int, float]
METRICS = ["count", "sum(amount)", "avg(amount)", "min(amount)", "max(amount)", "count_distinct(user_id)",
           "p90(amount)", "median(amount)"]


def events(n: int = 4000, start: dt.datetime = dt.datetime(2024, 3, 25, tzinfo=UTC), days: int = 14,
           seed: int = 7) -> list[Event]:
    """Events over `days` days from `start` (the DST change of 2024-03-31 in Europe inside), on whole seconds, a few
    exactly on local midnights (boundaries must count in the day they start)."""
    rnd = random.Random(seed)
    out = [(start + dt.timedelta(seconds=rnd.randrange(days * 86400)), rnd.choice(["DE", "FR", "US", "JP"]),
            rnd.randrange(60), round(rnd.uniform(1, 100), 2)) for _ in range(n)]
    paris = ZoneInfo("Europe/Paris")
    out += [(dt.datetime(2024, 3, d, tzinfo=paris).astimezone(UTC), "DE", 1, 5.0) for d in (26, 31)]
    out += [(dt.datetime(2024, 4, 1, tzinfo=paris).astimezone(UTC) - dt.timedelta(seconds=1), "FR", 2, 7.0)]
    return out


def percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def stats(rows: list[Event]) -> dict[str, Any]:
    amounts = [r[3] for r in rows]
    return {"count": len(rows), "sum_amount": sum(amounts), "avg_amount": sum(amounts) / len(amounts),
            "min_amount": min(amounts), "max_amount": max(amounts),
            "count_distinct_user_id": len({r[2] for r in rows}), "p90_amount": percentile(amounts, 0.9),
            "p50_amount": percentile(amounts, 0.5)}


def direct(evs: Iterable[Event], start: dt.datetime, end: dt.datetime, tz: str, period: str = "day",
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows by (local period, country) and totals by country over [start, end), computed in Python."""
    zone = ZoneInfo(tz)
    by: dict[tuple[dt.datetime, str], list[Event]] = defaultdict(list)  # by the UTC start of the local period
    total: dict[str, list[Event]] = defaultdict(list)
    for e in evs:
        if not start <= e[0] < end:
            continue
        local = e[0].astimezone(zone)
        if period == "hour":
            key = local.replace(minute=0, second=0).astimezone(UTC)  # keeps the fold: 02:00 twice in autumn
        else:
            key = dt.datetime.combine(local.date(), dt.time(0), tzinfo=zone).astimezone(UTC)
        by[(key, e[1])].append(e)
        total[e[1]].append(e)
    rows = [{"period": k.astimezone(zone).isoformat(), "country": c, **stats(v)} for (k, c), v in sorted(by.items())]
    return rows, [{"country": c, **stats(v)} for c, v in sorted(total.items())]


def close_to(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want, strict=True):  # every value the job returned, against the reference
        assert set(g) <= set(w), (g, w)
        for k, v in w.items():
            if k not in g:
                continue
            if isinstance(v, float):
                assert math.isclose(g[k], v, rel_tol=1e-9, abs_tol=1e-9), (k, g, w)
            else:
                assert g[k] == v, (k, g, w)


def to_sqlite(evs: list[Event], path: Path, table: str = "events") -> None:
    with sqlite3.connect(path) as c:
        c.execute(f"CREATE TABLE {table} (ts TEXT, country TEXT, user_id INTEGER, amount REAL)")
        c.execute(f"CREATE INDEX {table}_ts ON {table} (ts)")
        c.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)",
                      [(t.strftime("%Y-%m-%d %H:%M:%S"), a, b, d) for t, a, b, d in evs])


def to_csv(evs: list[Event], path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ts", "country", "user_id", "amount"])
        out.writerows((t.strftime("%Y-%m-%d %H:%M:%S"), a, b, d) for t, a, b, d in evs)


def to_parquet(evs: list[Event], path: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE e (ts TIMESTAMPTZ, country VARCHAR, user_id INTEGER, amount DOUBLE)")
    con.executemany("INSERT INTO e VALUES (?, ?, ?, ?)", evs)
    con.execute(f"COPY (SELECT * FROM e ORDER BY ts) TO '{path}' (FORMAT parquet)")
    con.close()


async def to_postgres(evs: list[Event], conn: Any, table: str = "events") -> None:
    await conn.execute(f"CREATE TABLE {table} (ts timestamptz, country text, user_id integer, amount double"
                       " precision)")
    await conn.copy_records_to_table(table, records=evs, columns=["ts", "country", "user_id", "amount"])
