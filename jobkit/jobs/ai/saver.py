"""Checkpoints written as often as the backend keeps up: every change pokes, at most one write is under way, and the
next one carries every change made meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ... import Context

__all__ = ["Saver"]


class Saver:
    def __init__(self, ctx: Context, snapshot: Callable[[], Any]) -> None:
        self.ctx, self.snapshot = ctx, snapshot
        self.dirty = False
        self.task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """Something changed: write it soon."""
        self.dirty = True
        if self.task is None or self.task.done():
            if self.task is not None and not self.task.cancelled() and self.task.exception() is not None:
                return  # the failure is raised by the next flush
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.dirty:
            self.dirty = False
            await self.ctx.save_checkpoint(self.snapshot())

    async def flush(self) -> None:
        """Return once every change so far is stored; raises what a write raised."""
        while True:
            task = self.task
            if task is not None:
                await task
            if not self.dirty:
                return
            self.task = None
            self.poke()
