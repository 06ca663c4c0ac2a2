"""`jobkit worker --processes N`: N worker processes under one supervisor.

The supervisor starts each child as `python -m jobkit worker ... --processes 1`, starts a child again when it
exits without being asked to (waiting longer after each quick crash, so a crash loop does not spin), passes
SIGTERM and SIGINT on to every child, and exits once they all have: each child stops as `jobkit worker` does,
within its `--grace` (plus the worker's own margin), and one still running past that is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from .errors import ConfigError
from .worker import STOP_MARGIN

__all__ = ["Supervisor", "child_command", "parse_processes"]

log = logging.getLogger("jobkit.supervisor")

BACKOFF_FIRST = 0.5  # seconds before restarting a child that crashed
BACKOFF_MAX = 30.0  # the longest wait between restarts of one child
STABLE_AFTER = 30.0  # a child that ran this long before crashing is restarted at once, its backoff reset
KILL_MARGIN = 2.0  # seconds past a child's own deadline (grace + STOP_MARGIN) before the supervisor kills it


def parse_processes(text: str) -> int:
    """`--processes`: a positive number, or `auto` for one per CPU core."""
    if text == "auto":
        return os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"--processes {text!r}: give a number of worker processes (1 or more) or `auto`")
    return value


class Supervisor:
    """Keeps `processes` children running `command` until a signal stops them all."""

    def __init__(self, command: Sequence[str], processes: int, grace: float) -> None:
        self.command = list(command)
        self.processes = processes
        self.deadline = grace + STOP_MARGIN + KILL_MARGIN
        self.children: dict[int, asyncio.subprocess.Process] = {}  # slot -> running child
        self.restarts = 0
        self._stop = asyncio.Event()
        self._signal: signal.Signals | None = None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Pass `sig` on to every child and stop restarting them."""
        self._signal = sig
        self._stop.set()
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)

    async def run(self) -> int:
        """Run until every child has exited after a signal; 0 if they all stopped cleanly, else 1."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # no loop signal handlers here
                loop.add_signal_handler(sig, self._signalled, sig)
        log.info("supervisor %d: starting %d worker processes", os.getpid(), self.processes)
        try:
            codes = await asyncio.gather(*(self._keep(slot) for slot in range(self.processes)))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("supervisor %d: every worker process has exited", os.getpid())
        return 0 if all(code == 0 for code in codes) else 1

    def _signalled(self, sig: signal.Signals) -> None:
        log.info("supervisor %d got %s: stopping %d worker process(es)", os.getpid(), sig.name, len(self.children))
        self.stop(sig)

    async def _keep(self, slot: int) -> int:
        """Run one child slot: restart its child after a crash until stopped; the last exit status."""
        backoff = BACKOFF_FIRST
        while True:
            started = time.monotonic()
            child = await asyncio.create_subprocess_exec(*self.command)
            self.children[slot] = child
            if self._stop.is_set():  # the signal came while this child was starting
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(self._signal or signal.SIGTERM)
            code = await self._wait(child)
            del self.children[slot]
            if self._stop.is_set():
                return code
            if code == 0:
                log.info("worker process %d exited by itself; not restarted", child.pid)
                return code
            ran = time.monotonic() - started
            if ran >= STABLE_AFTER:
                backoff = BACKOFF_FIRST
            wait = 0.0 if ran >= STABLE_AFTER else backoff
            log.warning("worker process %d exited with status %s after %.1fs; restarting it in %.1fs",
                        child.pid, code, ran, wait)
            self.restarts += 1
            if wait:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                if self._stop.is_set():
                    return code
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _wait(self, child: asyncio.subprocess.Process) -> int:
        """The child's exit status; once stopping, it is killed if it outlives its deadline."""
        waiting = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((waiting, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                done, _ = await asyncio.wait((waiting,), timeout=self.deadline)
                if not done:
                    log.warning("worker process %d did not stop within %.0fs; killing it", child.pid, self.deadline)
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
            return await waiting
        finally:
            stopping.cancel()


def child_command(argv: Sequence[str]) -> list[str]:
    """The command line of one child: this `jobkit worker` invocation, with one process (argparse keeps the
    last `--processes` given)."""
    return [sys.executable, "-m", "jobkit", *argv, "--processes", "1"]
