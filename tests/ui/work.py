"""Tasks the dashboard's tests run, and a worker that runs them until given jobs end."""

from __future__ import annotations

import asyncio

import jobkit
from jobkit import Queue
from jobkit.backends import Backend


@jobkit.task(queue="ui-work", attempts=1)
async def ui_boom(ctx: jobkit.Context, payload: dict[str, str]) -> None:
    raise ValueError(payload["why"])


@jobkit.task(queue="ui-work")
async def ui_echo(ctx: jobkit.Context, payload: dict[str, str]) -> dict[str, str]:
    return {"echo": payload["say"]}


async def drain(backend: Backend, *jobs: jobkit.Job) -> None:
    """Run a worker until every one of `jobs` has finished (bounded)."""
    worker = jobkit.Worker([ui_boom, ui_echo], backend=backend, queues=sorted({j.queue for j in jobs}),
                           handle_signals=False)
    running = asyncio.ensure_future(worker.run())
    try:
        for job in jobs:
            await (await Queue(job.queue, backend=backend).handle(job.id)).wait(timeout=20)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)
