"""Producer process: `python -m tests.cluster.produce URL N QUEUE...` adds N jobs round-robin over the queues,
in batches of 50, with ids `<queue>-<i>` (so a retried batch cannot duplicate), then prints `added N`."""

from __future__ import annotations

import asyncio
import sys

import jobkit

from .tasks import record

BATCH = 50


async def produce(url: str, n: int, queues: list[str]) -> int:
    backend = await jobkit.connect(url)
    added = 0
    try:
        for start in range(0, n, BATCH):
            by_queue: dict[str, list[int]] = {}
            for i in range(start, min(n, start + BATCH)):
                by_queue.setdefault(queues[i % len(queues)], []).append(i)
            for name, numbers in by_queue.items():
                jobs = await jobkit.Queue(name, backend=backend).add_bulk(
                    record, numbers, job_ids=[f"{name}-{i}" for i in numbers])
                added += len(jobs)
    finally:
        await backend.close()
    return added


if __name__ == "__main__":
    url, count, *names = sys.argv[1:]
    print("added", asyncio.run(produce(url, int(count), names)), flush=True)
