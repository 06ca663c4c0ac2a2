"""Redis keys and memory under default retention: N no-op jobs through one Worker, measured at checkpoints.

    .venv/bin/python benchmarks/redis_memory.py                          # 10k, 25k, 50k, 100k on a private server
    .venv/bin/python benchmarks/redis_memory.py --checkpoints 2000,20000 --url redis://127.0.0.1:6390/0

Without --url it starts a private redis-server on a free loopback port (nothing persisted) and stops it by PID;
with --url the database must be empty. Retention is the default (completed jobs: 24 h or the last 1000 per queue)
and nobody calls clean: the worker enforces the count as jobs finish (in the finish script) and the age in its
maintenance, every `maintenance_every` (5 s by default). At each checkpoint every added job has finished and one
maintenance pass has run since; `peak completed` and `peak used_memory` are the most seen (sampled every 0.25 s)
on the way there.
tests/reliability/test_redis_bounded.py asserts on the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

import jobkit
from jobkit.config import close_all
from jobkit.models import DEFAULT_KEEP_COMPLETED

QUEUE = "memory"
BATCH = 1000  # jobs per add_bulk
BACKLOG = 4000  # the producer waits while more than this many added jobs have not run yet
KEEP = DEFAULT_KEEP_COMPLETED.count or 0


@dataclass
class Sizes:
    dbsize: int
    used_memory: int
    used_memory_human: str
    stream: int
    completed: int
    completed_index: int
    metric_minutes: int = 0  # minutes of metrics kept, a hash each (bounded: 14 days)


@dataclass
class Snapshot:
    jobs: int
    seconds: float  # since the start, once retention was applied
    ran: float  # since the start, when the last of these jobs had run
    sizes: Sizes
    peak_completed: int  # the most completed jobs seen since the previous snapshot
    peak_memory: int  # the most used_memory seen since the previous snapshot


async def measure(raw: aioredis.Redis, queue: str = QUEUE) -> Sizes:
    """DBSIZE, INFO memory and the sizes of the queue's growing keys."""
    prefix = f"jobkit:{{{queue}}}:"
    pipe = raw.pipeline(transaction=False)
    pipe.dbsize().info("memory").xlen(prefix + "events").zcard(prefix + "completed").zcard(prefix + "ix:completed")
    pipe.zcard(prefix + "metrics")
    dbsize, memory, stream, completed, index, minutes = await pipe.execute()
    return Sizes(dbsize, int(memory["used_memory"]), str(memory["used_memory_human"]), stream, completed, index,
                 minutes)


async def run(url: str, checkpoints: list[int], on_snapshot: Callable[[Snapshot], None] | None = None, *,
              concurrency: int = 50, settle_timeout: float = 30.0) -> list[Snapshot]:
    """Run jobs up to each checkpoint in turn; snapshot the database once they are done and retention applied."""
    raw = aioredis.Redis.from_url(url, decode_responses=True)
    if await raw.dbsize():
        raise SystemExit(f"{url} is not empty; give an empty database (or no --url for a private server)")
    done = added = target = 0
    room = asyncio.Event()  # the backlog is short enough for another batch
    room.set()
    reached = asyncio.Event()  # `target` jobs have run

    @jobkit.task(name="memory_noop", queue=QUEUE)
    async def noop(ctx: jobkit.Context, n: int) -> None:
        """Only counts its runs, in this process: every byte left in Redis is the queue's own."""
        nonlocal done
        done += 1
        if added - done <= BACKLOG:
            room.set()
        if done >= target:
            reached.set()

    queue = jobkit.Queue(QUEUE, backend=url)
    worker = jobkit.Worker([noop], backend=url, queues=[QUEUE], concurrency=concurrency, handle_signals=False)
    peak = peak_memory = 0
    sampling = True

    async def sample() -> None:  # while the jobs run, four times a second
        nonlocal peak, peak_memory
        while sampling:
            sizes = await measure(raw)
            peak, peak_memory = max(peak, sizes.completed), max(peak_memory, sizes.used_memory)
            await asyncio.sleep(0.25)

    snapshots: list[Snapshot] = []
    worker_task = asyncio.ensure_future(worker.run())
    sampler = asyncio.ensure_future(sample())
    started = time.monotonic()
    try:
        await asyncio.wait_for(worker.started.wait(), 10)
        for checkpoint in checkpoints:
            target = checkpoint
            reached.clear()
            while added < checkpoint:
                await asyncio.wait_for(room.wait(), settle_timeout)
                n = min(BATCH, checkpoint - added)
                await queue.add_bulk(noop, list(range(n)))
                added += n
                if added - done > BACKLOG:
                    room.clear()
            await asyncio.wait_for(reached.wait(), settle_timeout + checkpoint / 500)
            ran = time.monotonic() - started
            await _settle(queue, worker_task, settle_timeout)
            snapshots.append(Snapshot(done, time.monotonic() - started, ran, await measure(raw), peak, peak_memory))
            peak = peak_memory = 0
            if on_snapshot is not None:
                on_snapshot(snapshots[-1])
    finally:
        sampling = False
        worker.stop()
        await asyncio.wait((worker_task, sampler), timeout=15)
        await close_all()
        await raw.aclose()
    worker_task.result()
    return snapshots


async def _settle(queue: jobkit.Queue, worker_task: asyncio.Future[None], timeout: float) -> None:
    """Wait (bounded) until every outcome is written and a maintenance pass has applied retention since."""
    deadline = time.monotonic() + timeout
    while True:  # no event says when maintenance ran: poll the counts
        counts = await queue.counts()
        if not (counts.waiting or counts.active) and counts.completed <= KEEP:
            return
        if worker_task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"retention not applied within {timeout}s: {counts}")
        await asyncio.sleep(0.1)


def row(s: Snapshot) -> str:
    z = s.sizes
    return (f"| {s.jobs:>7,} | {s.seconds:6.1f} | {z.dbsize:>6,} | {z.used_memory:>11,} | {z.used_memory_human:>8} "
            f"| {z.stream:>6,} | {z.completed:>9,} | {z.completed_index:>15,} | {s.peak_completed:>14,} "
            f"| {s.peak_memory:>11,} |")


HEADER = ("| jobs run | secs | DBSIZE | used_memory | human | stream | completed | completed index "
          "| peak completed | peak used_memory |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an empty Redis database (default: a private redis-server)")
    parser.add_argument("--checkpoints", default="10000,25000,50000,100000")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    print(HEADER, flush=True)

    def show(s: Snapshot) -> None:
        print(row(s), flush=True)

    if args.url:
        await run(args.url, checkpoints, show, concurrency=args.concurrency)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from private_redis import RedisServer

    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        await run(server.url(), checkpoints, show, concurrency=args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())
