"""`Throttle`: render at most once per interval, and never drop the latest value."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Throttle"]

T = TypeVar("T")
log = logging.getLogger("jobkit.notebook")


class Throttle(Generic[T]):
    """Calls `render(value)` at most once per `interval` seconds; the last value pushed is always rendered.

    A value pushed too soon after a render waits on a timer of the event loop, replaced by newer ones,
    so a job reporting 100,000 times a second costs the frontend about ten updates a second.
    """

    def __init__(
        self, render: Callable[[T], None], interval: float = 0.1, *,
        loop: asyncio.AbstractEventLoop | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self.interval = interval
        self._loop = loop
        self._clock = clock
        self._last = float("-inf")
        self._pending: tuple[T] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.pushes = 0
        self.renders = 0

    def push(self, value: T) -> None:
        """Render `value` now if the interval has passed, else when it has (unless a newer value comes)."""
        self.pushes += 1
        self._pending = (value,)
        if self._timer is not None:
            return
        wait = self._last + self.interval - self._clock()
        if wait <= 0:
            self.flush()
            return
        loop = self._loop or asyncio.get_running_loop()
        self._timer = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Render the pending value now, if there is one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._last = self._clock()
        self.renders += 1
        try:
            self._render(pending[0])
        except Exception:
            log.exception("rendering a jobkit view failed")

    def close(self) -> None:
        """Render what is pending and stop the timer."""
        self.flush()
