"""Tasks for the cluster worker processes: each run is appended to a per-process log, so the test counts runs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import jobkit


@jobkit.task(name="cluster.record", queue="cluster")
async def record(ctx: jobkit.Context, n: int) -> dict[str, int]:
    """Note this run (queue, job id, attempt) in this process's log, then return n and the worker's pid."""
    runs = Path(os.environ["JOBKIT_CLUSTER_RUNS"]) / f"{os.getpid()}.log"
    with runs.open("a") as f:
        f.write(f"{ctx.job.queue} {ctx.job.id} {ctx.attempt}\n")
    await asyncio.sleep(0.002)
    return {"n": n, "pid": os.getpid()}
