"""`Watchdog`: ends a signalled worker's process if it has not stopped by its deadline.

A task that blocks the event loop, or ignores cancellation, can hold a stopping worker however short its
grace: nothing inside the loop can pre-empt it. A thread can. Armed by a stop signal, it exits the process
when the deadline passes first; the jobs still held then run again once their leases expire.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time

__all__ = ["EXIT_CODE", "Watchdog"]

log = logging.getLogger("jobkit.worker")

EXIT_CODE = 1  # the process's exit status when the watchdog ends it


class Watchdog:
    """A daemon thread, idle until `arm(seconds)`; `stop()` ends it. Both are safe to call from a signal handler."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.armed = False
        self._orders: queue.SimpleQueue[float | None] = queue.SimpleQueue()  # put() is reentrant
        self._thread = threading.Thread(target=self._watch, name=f"jobkit-watchdog {what}", daemon=True)
        self._thread.start()

    def arm(self, seconds: float) -> None:
        """Exit the process in `seconds` unless stopped first (a later arm keeps the first deadline)."""
        self.armed = True
        self._orders.put(seconds)

    def stop(self) -> None:
        self._orders.put(None)

    def _watch(self) -> None:
        seconds = self._orders.get()
        if seconds is None:
            return
        deadline = time.monotonic() + seconds
        while True:
            try:
                if self._orders.get(timeout=max(0.0, deadline - time.monotonic())) is None:
                    return
            except queue.Empty:
                self._exit(seconds)

    def _exit(self, seconds: float) -> None:
        log.critical("%s has not stopped %.1fs after the stop signal: a task blocks the event loop or ignores"
                     " cancellation. Exiting now; the jobs it still holds run again once their leases expire",
                     self.what, seconds)
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_CODE)
