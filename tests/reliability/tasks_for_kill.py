"""Tasks imported by worker processes that the reliability tests start (and kill)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

import jobkit


@jobkit.task(queue="reliability", attempts=1, max_stalls=2)
async def hang_first_time(ctx: jobkit.Context, label: str) -> dict[str, object]:
    """Attempt 1 reports progress then hangs (to be killed); a later attempt completes."""
    await ctx.progress(10, f"pid {os.getpid()} started")
    if ctx.attempt == 1:
        await asyncio.sleep(3600)
    return {"label": label, "pid": os.getpid(), "attempt": ctx.attempt}


@jobkit.task(queue="reliability")
async def takes_a_moment(ctx: jobkit.Context, seconds: float) -> int:
    """Runs for `seconds`, reporting progress first, and returns the worker's pid."""
    await ctx.progress(1, "working")
    await asyncio.sleep(seconds)
    return os.getpid()


@jobkit.task(queue="reliability")
async def returns_pid(ctx: jobkit.Context) -> int:
    """Returns the worker's pid at once (no progress write: a short job on every backend)."""
    return os.getpid()


@jobkit.task(queue="reliability", attempts=2, backoff=0.0)
async def exits(ctx: jobkit.Context, how: str) -> None:
    """Ends its attempt the way a script would end its process: sys.exit or KeyboardInterrupt."""
    if how == "KeyboardInterrupt":
        raise KeyboardInterrupt
    sys.exit(f"gave up in pid {os.getpid()}")


@jobkit.task(queue="reliability")
async def ignores_cancellation(ctx: jobkit.Context) -> None:
    """Reports progress, then catches every CancelledError: only the end of its process stops it."""
    await ctx.progress(1, "started")
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


@jobkit.task(queue="reliability")
async def blocks_the_loop(ctx: jobkit.Context) -> None:
    """Reports progress, then blocks the event loop (synchronous code in an async task)."""
    await ctx.progress(1, "started")
    time.sleep(3600)
