"""Where one job's time goes in local_bench.py's e2e (a Worker running while one add per job is awaited).

    benchmarks/.venv/bin/python benchmarks/e2e_breakdown.py [--n 3000] [--statements]
    benchmarks/.venv/bin/python benchmarks/e2e_breakdown.py --memory [--n 20000]

Times, per job: each transaction on aiosqlite's thread by what it held (adds, claims, finishes), the thread's
idle time between two transactions (the trip back to the event loop, the loop's turn, the trip to the thread),
and with --statements each SQL statement (timed around sqlite3's execute, so it counts waits for the GIL too).
It wraps jobkit internals (`_Store.transaction`, the connection), so it is a diagnostic, not a benchmark: its
own timers cost a few percent. Also a floor: the producer alone (no worker), and an empty trip to the thread.
With --memory: memory://, where an add never waits, so the producer adds every job before the worker runs; the
two phases, and the cyclic GC's collections by generation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sqlite3
import statistics
import tempfile
import time
from typing import Any

import jobkit
from jobkit.backends import sqlite as sqlite_backend

Store = sqlite_backend._Store


class TimedConnection:
    """A sqlite3 connection whose execute/executemany calls are timed by statement."""

    def __init__(self, conn: sqlite3.Connection, spent: dict[str, float], calls: collections.Counter[str]) -> None:
        self._conn, self._spent, self._calls = conn, spent, calls

    def _timed(self, method: str, sql: str, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return getattr(self._conn, method)(sql, *args)
        finally:
            key = " ".join(sql.split())[:60]
            self._spent[key] += time.perf_counter() - t0
            self._calls[key] += 1

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed("execute", sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed("executemany", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def e2e(url: str, n: int, statements: bool) -> None:
    kinds: dict[tuple[str, ...], list[float]] = collections.defaultdict(list)
    idle: list[float] = []
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    last_end = [0.0]
    run = Store.transaction

    def timed(self: Any, batch: Any) -> Any:
        if statements and not isinstance(self.conn, TimedConnection):
            self.conn = TimedConnection(self.conn, spent, calls)
        t0 = time.perf_counter()
        if last_end[0]:
            idle.append(t0 - last_end[0])
        try:
            return run(self, batch)
        finally:
            last_end[0] = time.perf_counter()
            kinds[tuple(sorted(fn.__name__ for fn, _, _ in batch))].append(last_end[0] - t0)

    done, count = asyncio.Event(), [0]

    @jobkit.task(queue="breakdown")
    async def noop(ctx: Any) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    Store.transaction = timed  # type: ignore[method-assign]
    try:
        backend = await jobkit.connect(url)
        queue = jobkit.Queue("breakdown", backend=backend)
        async with jobkit.Worker([noop], backend=backend, concurrency=10, handle_signals=False):
            kinds.clear(), idle.clear(), spent.clear(), calls.clear()
            t0 = time.perf_counter()
            for _ in range(n):
                await queue.add(noop)
            await asyncio.wait_for(done.wait(), 120)
            wall = time.perf_counter() - t0
        await backend.close()
    finally:
        Store.transaction = run  # type: ignore[method-assign]
    per = 1e6 / n
    in_tx = sum(sum(v) for v in kinds.values())
    print(f"e2e: {n / wall:,.0f} jobs/s, {wall * per:.0f} us per job: in transactions on the thread "
          f"{in_tx * per:.0f}, thread idle between them {sum(idle) * per:.0f}; "
          f"{sum(len(v) for v in kinds.values()) / n:.2f} transactions per job")
    for kind, times in sorted(kinds.items(), key=lambda kv: -len(kv[1]))[:4]:
        print(f"  {len(times):6d} transactions of {'+'.join(kind)}: median {statistics.median(times) * 1e6:.0f} us")
    if idle:
        print(f"  thread idle between two transactions: median {statistics.median(idle) * 1e6:.0f} us")
    for key, secs in sorted(spent.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {secs * per:7.1f} us per job  {calls[key] / n:5.2f} per job  {key}")


async def producer_alone(url: str, n: int) -> None:
    @jobkit.task(queue="breakdown-alone")
    async def alone(ctx: Any) -> None:
        pass

    backend = await jobkit.connect(url)
    queue = jobkit.Queue("breakdown-alone", backend=backend)
    await queue.add(alone)
    t0 = time.perf_counter()
    for _ in range(n):
        await queue.add(alone)
    wall = time.perf_counter() - t0
    db = backend._db  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for _ in range(n):
        await db._execute(lambda: None)  # a trip to aiosqlite's thread and back, doing nothing
    hop = time.perf_counter() - t0
    await backend.close()
    print(f"producer alone: {n / wall:,.0f} adds/s ({wall / n * 1e6:.0f} us per awaited add); an empty trip to the "
          f"thread and back {hop / n * 1e6:.0f} us")


async def memory(n: int) -> None:
    collections_by_gen: dict[int, list[float]] = collections.defaultdict(list)
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections_by_gen[info["generation"]].append(time.perf_counter() - started[0])

    done, count, first = asyncio.Event(), [0], [0.0]

    @jobkit.task(queue="breakdown-memory")
    async def in_memory(ctx: Any) -> None:
        count[0] += 1
        if count[0] == 1:
            first[0] = time.perf_counter()
        if count[0] == n:
            done.set()

    backend = await jobkit.connect("memory://breakdown")
    queue = jobkit.Queue("breakdown-memory", backend=backend)
    async with jobkit.Worker([in_memory], backend=backend, concurrency=10, handle_signals=False):
        gc.callbacks.append(on_gc)
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                await queue.add(in_memory)
            added = time.perf_counter()
            await asyncio.wait_for(done.wait(), 120)
            end = time.perf_counter()
        finally:
            gc.callbacks.remove(on_gc)
    await backend.close()
    per = 1e6 / n
    print(f"memory e2e: {n / (end - t0):,.0f} jobs/s, {(end - t0) * per:.1f} us per job: adding "
          f"{(added - t0) * per:.1f} (the first job started {(first[0] - added) * 1e3:.1f} ms after the last add), "
          f"running {(end - added) * per:.1f}")
    for gen, times in sorted(collections_by_gen.items()):
        print(f"  GC generation {gen}: {len(times)} collections, {sum(times) * 1e3:.0f} ms ({sum(times) * per:.1f} us "
              "per job)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--statements", action="store_true", help="time each SQL statement too")
    parser.add_argument("--memory", action="store_true", help="memory:// instead of SQLite")
    args = parser.parse_args()
    if args.memory:
        asyncio.run(memory(args.n))
        return
    with tempfile.TemporaryDirectory(prefix="jobkit-breakdown-") as tmp:
        asyncio.run(e2e(f"sqlite:///{tmp}/e2e.db", args.n, args.statements))
        asyncio.run(producer_alone(f"sqlite:///{tmp}/alone.db", args.n))


if __name__ == "__main__":
    main()
