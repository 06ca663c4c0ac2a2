"""`Background`: the tasks a view runs on its event loop, kept referenced and stopped together."""

from __future__ import annotations

import asyncio
import atexit
import logging
import weakref
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]

log = logging.getLogger("jobkit.notebook")
_all: weakref.WeakSet[Background] = weakref.WeakSet()


class Background:
    """Tasks of one view on one loop (the kernel's): referenced until done, failures logged, cancelled together."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[Any]] = set()
        _all.add(self)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        """Run `coro` as a task on this loop; safe to call from another thread (a frontend callback)."""
        try:
            here = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            here = False
        if here:
            self._start(coro, name)
        else:
            self.loop.call_soon_threadsafe(self._start, coro, name)

    def _start(self, coro: Coroutine[Any, Any, Any], name: str | None) -> None:
        task = self.loop.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("jobkit view task %s failed", task.get_name(), exc_info=task.exception())

    async def join(self, timeout: float | None = None) -> None:
        """Wait until every task started so far has ended (asyncio.TimeoutError after `timeout`)."""
        if self.tasks:
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), timeout)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


@atexit.register
def _stop_all() -> None:
    """At interpreter exit (a kernel shutting down), let the views' tasks end instead of dying pending."""
    for bg in list(_all):
        tasks = [t for t in bg.tasks if not t.done()]
        if not tasks or bg.loop.is_closed() or bg.loop.is_running():
            continue
        bg.cancel()
        try:
            bg.loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        except Exception:
            log.debug("could not stop jobkit view tasks at exit", exc_info=True)
