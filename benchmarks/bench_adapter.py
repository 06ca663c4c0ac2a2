"""jobkit peer for the shared job-queue benchmark (shared/bench, see its README.md).

The harness runs this file with shared/bench as the working directory:

    .venv/bin/python run_all.py --adapter "jobkit=/path/to/jobkit/.venv/bin/python benchmarks/bench_adapter.py"

Configured with library defaults:
- enqueue: one `Queue.add_bulk` call (one transaction for all N jobs);
- drain/sleep: one `jobkit.Worker` in this event loop, `concurrency=C`, `handle_signals=False`;
- latency: `jobkit.submit(...)` then `JobHandle.result()` (event-driven wait, no polling interval to tune);
- the event loop is uvloop's when installed (the `uvloop` extra), as `jobkit worker` chooses by default;
  JOBKIT_BENCH_LOOP=asyncio runs on asyncio's own loop instead.
- JOBKIT_BENCH_PROCESSES=N (N >= 2): drain/sleep/latency use `jobkit worker bench_adapter --processes N
  --concurrency C` spawned instead (N processes of concurrency C each, under the supervisor), as the harness
  spawns celery, dramatiq and huey.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.getcwd(), "peers"))

import benchlib  # found through the harness working directory (sys.path above)

import jobkit

QUEUE = "bench"


@jobkit.task(name="bench.noop", queue=QUEUE)
async def noop(ctx: jobkit.Context, payload: dict[str, int]) -> int:
    started = time.time()
    await benchlib.AsyncProbe.done(started)
    return payload["i"]


@jobkit.task(name="bench.sleeper", queue=QUEUE)
async def sleeper(ctx: jobkit.Context, payload: dict[str, int]) -> None:
    started = time.time()
    await asyncio.sleep(payload["ms"] / 1000)
    await benchlib.AsyncProbe.done(started)


class JobkitPeer:
    enqueue_api = "Queue.add_bulk"

    def __init__(self) -> None:
        self.backend: jobkit.Backend | None = None
        self.queue: jobkit.Queue | None = None
        self.worker: jobkit.Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.url = ""
        self.processes = int(os.environ.get("JOBKIT_BENCH_PROCESSES", "1"))
        self.spawned: subprocess.Popen[bytes] | None = None

    async def setup(self, url: str) -> None:
        self.url = url
        self.backend = await jobkit.connect(url)
        self.queue = jobkit.Queue(QUEUE, backend=self.backend)

    async def enqueue(self, n: int, sleep_ms: int | None = None) -> None:
        assert self.queue is not None
        if sleep_ms:
            await self.queue.add_bulk(sleeper, ({"i": i, "ms": sleep_ms} for i in range(n)))
        else:
            await self.queue.add_bulk(noop, ({"i": i} for i in range(n)))

    async def queued(self) -> int:
        assert self.queue is not None
        return (await self.queue.counts()).waiting

    async def start_worker(self, concurrency: int) -> None:
        if self.processes > 1:
            await self._spawn_workers(concurrency)
            return
        self.worker = jobkit.Worker(
            [noop, sleeper], backend=self.backend, queues=[QUEUE], concurrency=concurrency, handle_signals=False
        )
        self.worker_task = asyncio.create_task(self.worker.run())
        started = asyncio.create_task(self.worker.started.wait())
        await asyncio.wait((self.worker_task, started), return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self.worker_task.done():
            self.worker_task.result()  # the worker failed to start: raise its error

    async def _spawn_workers(self, concurrency: int) -> None:
        """`jobkit worker --processes N`, then wait (bounded) until every child sends a heartbeat."""
        here = os.path.dirname(os.path.abspath(__file__))
        self.spawned = subprocess.Popen(
            [sys.executable, "-m", "jobkit", "worker", "bench_adapter", "--url", self.url, "--queue", QUEUE,
             "--concurrency", str(concurrency), "--processes", str(self.processes), "--log-level", "WARNING"],
            env={**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])},
        )
        assert self.backend is not None
        deadline = time.monotonic() + 60
        while len(await self.backend.workers(time.time(), QUEUE)) < self.processes:
            if self.spawned.poll() is not None or time.monotonic() > deadline:
                benchlib.fail("the spawned worker processes did not start")
            await asyncio.sleep(0.05)  # heartbeats, with no event to wait on

    async def run_one(self, i: int) -> None:
        handle = await jobkit.submit(noop, {"i": i}, backend=self.backend)
        result = await handle.result(timeout=30)
        if result != i:
            benchlib.fail(f"job {i} returned {result!r}")

    async def stop_worker(self) -> None:
        try:
            if self.spawned is not None:
                self.spawned.send_signal(signal.SIGTERM)
                await asyncio.to_thread(self.spawned.wait, 60)
            if self.worker is not None and self.worker_task is not None:
                self.worker.stop()
                await self.worker_task
        finally:
            if self.backend is not None:
                await self.backend.close()


if __name__ == "__main__":
    from jobkit.cli import _run_on_loop

    sys.exit(_run_on_loop(benchlib.run_async(JobkitPeer()), os.environ.get("JOBKIT_BENCH_LOOP", "auto")))
