"""Fire delay of schedules: how late a 1-second schedule's jobs start, with 1 and 3 `jobkit worker` processes.

    .venv/bin/python benchmarks/schedule_delay.py                        # SQLite and Redis, 1 and 3 workers, 60 s each
    .venv/bin/python benchmarks/schedule_delay.py --seconds 120 --backends redis --workers 2

For each backend and worker count: a fresh SQLite file or Redis database, N worker processes serving the task
below (`@task(every=1)`), run for --seconds, then stopped with SIGTERM. The delay of a tick is its job's
`started_at` minus the tick's own time (in its id): the schedule loop waking, the atomic fire, the claim. The
first WARMUP ticks are left out (worker start-up). Also counted: ticks without a job and jobs run twice (both
must be 0). Without --redis-url it starts a private redis-server on a free loopback port and stops it by PID.
Prints a Markdown table and writes it to results/schedule-delay-<UTC stamp>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import jobkit

QUEUE = "delay"
WARMUP = 3  # first ticks left out
HERE = Path(__file__).resolve().parent


@jobkit.task(queue=QUEUE, every=1)
async def tick(ctx: jobkit.Context) -> None:
    """A no-op: the job's started_at is what the benchmark reads."""


def _tick_time(job_id: str) -> float:
    return datetime.fromisoformat(job_id.split("@")[1].replace("Z", "+00:00")).timestamp()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(url: str, workers: int, seconds: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "jobkit", "--log-level", "WARNING", "worker", "schedule_delay", "--url", url]
    procs = [subprocess.Popen(cmd, cwd=HERE, env=env) for _ in range(workers)]
    try:
        await asyncio.sleep(seconds)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            await asyncio.to_thread(p.wait, 60)
    backend = await jobkit.connect(url)
    try:
        jobs = await jobkit.Queue(QUEUE, backend=backend).jobs(limit=100_000)
    finally:
        await backend.close()
    ticks = sorted((_tick_time(j.id), j) for j in jobs)[WARMUP:]
    delays = [j.started_at - at for at, j in ticks if j.started_at is not None]
    span = round(ticks[-1][0] - ticks[0][0]) + 1 if ticks else 0
    return {"ticks": len(ticks), "missing": span - len(ticks), "twice": sum(1 for _, j in ticks if j.attempts > 1),
            "p50": _pct(delays, 50), "p99": _pct(delays, 99), "max": max(delays), "mean": statistics.fmean(delays)}


def _redis_db(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--workers", default="1,3", help="worker process counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="run time of each configuration")
    parser.add_argument("--redis-url", help="a Redis database to empty and use (default: a private redis-server)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    rows = ["| backend | workers | ticks | missing | run twice | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if "redis" in args.backends and not args.redis_url:
            sys.path.insert(0, str(HERE.parent / "tests"))
            from private_redis import RedisServer

            server = RedisServer(Path(tmp)).__enter__()  # started and answering; stopped below
        try:
            for backend in args.backends.split(","):
                for n in counts:
                    if backend == "sqlite":
                        url = f"sqlite:///{Path(tmp) / f'delay-{n}.db'}"
                    else:
                        url = args.redis_url or (server.url() if server else "")
                        _redis_db(url)
                    r = await measure(url, n, args.seconds)
                    row = (f"| {backend} | {n} | {r['ticks']:.0f} | {r['missing']:.0f} | {r['twice']:.0f} |"
                           f" {r['p50'] * 1000:.1f} | {r['p99'] * 1000:.1f} | {r['max'] * 1000:.1f} |")
                    rows.append(row)
                    print(row, flush=True)
        finally:
            if server is not None:
                server.stop()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = HERE / "results" / f"schedule-delay-{stamp}.md"
    out.write_text(f"# Schedule fire delay ({args.seconds:g} s per row)\n\n" + "\n".join(rows) + "\n")
    print(f"\nwritten to {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    asyncio.run(main())
