"""Tasks the dashboard's browser check runs in a `jobkit worker` process: a job whose bar moves, quick jobs, a
failure whose message is hostile markup."""

from __future__ import annotations

import asyncio
from typing import Any

import jobkit


@jobkit.task(queue="ui-demo")
async def ui_crawl(ctx: jobkit.Context, payload: dict[str, Any]) -> dict[str, int]:
    """`steps` steps of `pause` seconds each, reporting progress after each; stops when asked to cancel."""
    steps, pause = int(payload.get("steps", 80)), float(payload.get("pause", 0.25))
    for step in range(1, steps + 1):
        if ctx.cancelled:  # returning now ends the job as cancelled
            return {"steps": step - 1}
        await asyncio.sleep(pause)
        await ctx.progress(100 * step / steps, f"step {step} of {steps}")
    return {"steps": steps}


@jobkit.task(queue="ui-demo")
async def ui_quick(ctx: jobkit.Context, payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload}


@jobkit.task(queue="ui-demo", attempts=1)
async def ui_fail(ctx: jobkit.Context, payload: dict[str, Any]) -> None:
    raise ValueError(payload["why"])
