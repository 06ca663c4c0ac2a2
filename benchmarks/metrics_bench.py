"""What recording metrics costs per job: the plain drain with metrics counted and without, side by side in one run.

    .venv/bin/python benchmarks/metrics_bench.py --redis-url redis://127.0.0.1:6379/14 --rounds 7 --n 5000

A drain: N no-op jobs added in bulk, then one Worker at concurrency 10 runs them all; timed from the worker's start
until it has stopped with every outcome written. Each round drains once with metrics and once without on each
backend (memory://, a fresh SQLite file, an emptied Redis db), in one process, the order swapped every other round,
so that a machine whose speed drifts weighs on both sides alike. "Without" is the same code with the counting cut
out: `_metrics.count` made a no-op (memory, SQLite), and the finish scripts loaded without their `count_metrics`
call (Redis). Reported per job, medians over the rounds and the median of the rounds' differences: wall time, the
process's CPU time (every thread: what a job costs whatever else runs on this shared machine) and, on Redis, the
server's own time in scripts (INFO commandstats, reset before each drain), where Redis counts the metrics.
Beside each drain, the same jobs through the two transitions alone (claim 16, finish them; no worker, no tasks):
the finish transition is where metrics are counted, and timed alone it shows their cost above the machine's noise.
Results go to benchmarks/results/metrics-<stamp>.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jobkit
from jobkit.backends import Backend, _metrics, from_url
from jobkit.backends import redis as redis_backend
from jobkit.backends import sqlite as sqlite_backend

HERE = Path(__file__).resolve().parent
COUNT_CALL = "if state == 'completed' or state == 'failed' then count_metrics(v, state, now) end"
_count = _metrics.count
_ran = 0
_done = asyncio.Event()
_n = 0


@jobkit.task(name="bench.noop", queue="bench")
async def noop(ctx: jobkit.Context) -> None:
    global _ran
    _ran += 1
    if _ran == _n:
        _done.set()


@contextmanager
def counting(on: bool) -> Iterator[None]:
    """Metrics counted (as shipped) or not, for backends made inside."""
    if on:
        yield
        return
    redis_backend._scripts()
    shipped = dict(redis_backend._sources)
    for name in ("finish", "finish_claim"):
        src = shipped[name][1]
        assert COUNT_CALL in src, f"{name}.lua no longer counts metrics as this benchmark expects"
        cut = src.replace(COUNT_CALL, "")
        redis_backend._sources[name] = (hashlib.sha1(cut.encode()).hexdigest(), cut)
    _metrics.count = lambda tally, job, now: None
    try:
        yield
    finally:
        _metrics.count = _count
        redis_backend._sources.clear()
        redis_backend._sources.update(shipped)


async def drain(url: str, n: int, on: bool) -> dict[str, float]:
    """Drain n no-op jobs on `url` with one worker (concurrency 10); per job: wall, CPU and Redis script time."""
    global _ran, _done, _n
    _ran, _done, _n = 0, asyncio.Event(), n
    with counting(on):
        backend: Backend = from_url(url)
        await backend.open()
        client = await _emptied(url)
        q = jobkit.Queue("bench", backend=backend)
        for i in range(0, n, 1000):
            await q.add_bulk(noop, [None] * min(1000, n - i))
        if client is not None:
            await client.config_resetstat()
        worker = jobkit.Worker([noop], backend=backend, queues=["bench"], concurrency=10, handle_signals=False)
        started, cpu = time.perf_counter(), time.process_time()
        runner = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(_done.wait(), 600)
        worker.stop()
        await runner
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        out = {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}
        if client is not None:
            out["redis_us"] = await _script_time(client) / n
            await client.aclose()
        counts = await q.counts()
        assert counts.waiting == counts.active == counts.failed == 0, counts  # every outcome written
        rows = await backend.metrics("bench", 0)
        assert bool(rows) == on, "metrics counted only when on"
        await backend.close()
    return out


_batches = [0, 0]  # finishes with outcomes, outcomes: the mean batch a Redis finish script counts


def _counted(fn: Any) -> Any:
    async def wrapper(self: Any, queue: str, worker: str, outcomes: Any, *args: Any, **kw: Any) -> Any:
        if outcomes:
            _batches[0] += 1
            _batches[1] += len(outcomes)
        return await fn(self, queue, worker, outcomes, *args, **kw)
    return wrapper


redis_backend.RedisBackend.finish = _counted(redis_backend.RedisBackend.finish)  # type: ignore[method-assign]
redis_backend.RedisBackend.finish_and_claim = _counted(  # type: ignore[method-assign]
    redis_backend.RedisBackend.finish_and_claim)
_sqlite_count = [0.0]  # thread CPU seconds in the SQLite finish's metrics upsert (_Store._count)


def _timed_count(fn: Any) -> Any:
    def wrapper(*args: Any) -> None:
        started = time.thread_time()
        fn(*args)
        _sqlite_count[0] += time.thread_time() - started
    return wrapper


sqlite_backend._Store._count = _timed_count(sqlite_backend._Store._count)  # type: ignore[method-assign]


async def transitions(url: str, n: int, on: bool) -> dict[str, float]:
    """The two transitions a worker runs per job, alone: claim 16, finish them (completed), until n ran; per job
    the process's CPU time and, on Redis, the server's time in scripts. Far less noisy than a drain."""
    from jobkit.models import JobState, Outcome

    _sqlite_count[0] = 0.0
    with counting(on):
        backend: Backend = from_url(url)
        await backend.open()
        client = await _emptied(url)
        await jobkit.Queue("bench", backend=backend).add_bulk(noop, [None] * n)
        if client is not None:
            await client.config_resetstat()
        cpu = time.process_time()
        while True:
            now = time.time()
            got = await backend.claim("bench", "w", limit=16, lease=60, now=now)
            if not got.jobs:
                break
            await backend.finish("bench", "w", [Outcome(job_id=j.id, state=JobState.COMPLETED) for j in got.jobs], now)
        out = {"cpu_us": (time.process_time() - cpu) / n * 1e6}
        if url.startswith("sqlite") and on:
            out["sqlite_count_us"] = _sqlite_count[0] / n * 1e6
        if client is not None:
            out["redis_us"] = await _script_time(client) / n
            await client.aclose()
        await backend.close()
    return out


async def _emptied(url: str) -> Any:
    """A client of the Redis db at `url`, emptied; None for other backends."""
    if not url.startswith("redis"):
        return None
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    return client


async def _script_time(client: Any) -> float:
    """Microseconds the Redis server spent in scripts since its stats were reset."""
    stats = await client.info("commandstats")
    return float(sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_eval")))


LUA_TIMED = """
local n = tonumber(ARGV[1])
local v = {name = 'bench.noop', started = '1765083712.123456', run_at = '1765083711.5',
           ck = '1765083711.500000:000000000012:abcdef'}
local t0 = redis.call('TIME')
if ARGV[2] == 'count' then
  for i = 1, n do count_metrics(v, 'completed', 1765083713.0 + (i % 16) * 0.01) end
else
  for i = 1, n do redis.call('HINCRBY', KEYS[1], 'bench.noop' .. (i % 4), 1) end
  redis.call('DEL', KEYS[1])
end
local t1 = redis.call('TIME')
return (t1[1] - t0[1]) * 1000000 + (t1[2] - t0[2])
"""


async def redis_parts(url: str, n: int = 100_000) -> dict[str, float]:
    """Server microseconds of the finish script's metrics parts: `count_metrics` per job (its Lua, taken from the
    shipped _finish.lua), and one HINCRBY (a script makes one per distinct field of its batch, and one for "#")."""
    import redis.asyncio as aioredis

    src = redis_backend._scripts()["finish"][1]
    parts = src[src.index("local KEPT_MINUTES"):src.index("-- Adds the counts to this minute")]
    client = aioredis.Redis.from_url(url)
    try:
        count = [await client.eval(parts + LUA_TIMED, 1, "bench:{m}", n, "count") / n for _ in range(7)]
        hincr = [await client.eval(LUA_TIMED, 1, "bench:{m}", n, "hincrby") / n for _ in range(7)]
    finally:
        await client.aclose()
    return {"count_metrics_us": statistics.median(count), "hincrby_us": statistics.median(hincr)}


def count_cost(rounds: int = 200_000) -> float:
    """CPU microseconds `_metrics.count` takes per finished job (what memory and SQLite add in Python)."""
    from jobkit.models import Job, JobState

    now = time.time()
    job = Job(id="x", name="bench.noop", queue="bench", state=JobState.COMPLETED, created_at=now - 1,
              run_at=now - 1, started_at=now - 0.5)
    tally: _metrics.Tally = {}
    started = time.process_time()
    for _ in range(rounds):
        _metrics.count(tally, job, now)
    return (time.process_time() - started) / rounds * 1e6


async def run(args: argparse.Namespace, tmp: str) -> dict[str, dict[str, list[dict[str, float]]]]:
    """{"<backend> <measure>": {"with"/"without": [per-job figures of each round]}}, after one untimed warm-up."""
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    for kind in args.backends:
        await drain({"memory": "memory://", "sqlite": f"sqlite:///{tmp}/warm.db", "redis": args.redis_url}[kind],
                    min(args.n, 1000), True)
    for r in range(args.rounds):
        for kind in args.backends:
            for measure, fn in (("drain", drain), ("transitions", transitions)):
                for on in (True, False) if r % 2 == 0 else (False, True):
                    side = "with" if on else "without"
                    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/{measure}-{side}-{r}.db",
                           "redis": args.redis_url}[kind]
                    got = await fn(url, args.n, on)
                    rows.setdefault(f"{kind} {measure}", {}).setdefault(side, []).append(got)
                    print(kind, measure, side, r, {k: round(v, 1) for k, v in got.items()}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="a db this benchmark may empty")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["memory", "sqlite", "redis"])
    args = parser.parse_args()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(run(args, tmp))
    loads.append(os.getloadavg()[0])
    summary: dict[str, Any] = {"n": args.n, "rounds": args.rounds, "load_1min": loads,
                               "count_cpu_us": count_cost(), "backends": {}}
    if "redis" in args.backends:
        summary["redis_parts"] = asyncio.run(redis_parts(args.redis_url))
        summary["redis_mean_batch"] = _batches[1] / max(_batches[0], 1)
    if "sqlite" in args.backends:
        upserts = [x["sqlite_count_us"] for x in rows["sqlite transitions"]["with"]]
        summary["sqlite_upsert_us"] = statistics.median(upserts)
    for kind, sides in rows.items():
        summary["backends"][kind] = {
            key: {"without": statistics.median(x.get(key, 0.0) for x in sides["without"]),
                  "with": statistics.median(x[key] for x in sides["with"]),
                  "diff": statistics.median(a[key] - b[key] for a, b in zip(sides["with"], sides["without"],
                                                                              strict=True)),
                  "runs": {side: [x[key] for x in runs] for side, runs in sides.items()}}
            for key in sides["without"][0]}
    out = HERE / "results" / f"metrics-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    names = {"wall_us": "wall time", "cpu_us": "the process's CPU time", "redis_us": "Redis server's time in scripts"}
    lines = [f"# metrics: cost per job, {stamp}", "",
             f"{args.n} no-op jobs per drain, {args.rounds} rounds, with and without interleaved; load (1 min)"
             f" {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores", "",
             "The parts, timed alone (steadier than the A/B rows below, which this machine's load blurs):", "",
             f"- `_metrics.count` (memory, SQLite): {summary['count_cpu_us']:.2f} µs CPU per job",
             *([f"- SQLite's metrics upsert in the finish transaction (`_Store._count`, batches of 16):"
                f" {summary['sqlite_upsert_us']:.2f} µs thread CPU per job"] if "sqlite_upsert_us" in summary else []),
             *([f"- Redis `count_metrics` (Lua): {summary['redis_parts']['count_metrics_us']:.2f} µs per job; one"
                f" HINCRBY in a script: {summary['redis_parts']['hincrby_us']:.2f} µs (a finish makes one per distinct"
                f" field of its batch, and one for `#`); the drain's finishes held"
                f" {summary['redis_mean_batch']:.1f} outcomes on average"] if "redis_parts" in summary else []),
             "",
             "| backend, measure | per job | without metrics µs | with metrics µs | with - without (median) |",
             "|---|---|---:|---:|---:|"]
    for what, entry in summary["backends"].items():
        for key, m in entry.items():
            lines.append(f"| {what} | {names[key]} | {m['without']:.1f} | {m['with']:.1f} | {m['diff']:+.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
