"""Tasks that the worker processes of the webhook kill tests run."""

from __future__ import annotations

import asyncio

import jobkit


@jobkit.task(name="hooks.quick", queue="hooks")
async def quick(ctx: jobkit.Context, n: int) -> int:
    return n * 2


@jobkit.task(name="hooks.hangs", queue="hooks", max_stalls=0)
async def hangs(ctx: jobkit.Context) -> None:
    """Reports progress, then waits to be killed."""
    await ctx.progress(10, "started")
    await asyncio.sleep(3600)
