"""Run a command under a real pseudo-terminal of a given size and replay what it drew on a VT100 emulator (pyte)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence

import pyte

Check = Callable[[list[str]], None]


class Terminal:
    """A screen of `cols` by `rows`; `run` feeds it a command's output, checking the screen after every read."""

    def __init__(self, cols: int, rows: int = 40) -> None:
        self.cols, self.rows = cols, rows
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def run(self, argv: Sequence[str], env: dict[str, str], check: Check | None = None, *, cwd: str | None = None,
            timeout: float = 60.0) -> int:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
        proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                close_fds=True)
        os.close(slave)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{argv} did not finish in {timeout}s; screen:\n" + "\n".join(self.lines))
                ready, _, _ = select.select([master], [], [], min(left, 1.0))
                if not ready:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side of the terminal
                    break
                if not chunk:
                    break
                self.raw += chunk
                self.stream.feed(chunk)
                if check is not None:
                    check(self.lines)
            return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
