"""Private redis-server processes for tests that stop, restart or reconfigure Redis (never the shared 6379).

Each server listens on a free loopback port, keeps its files in a directory of the test's own and is stopped
by its PID: SIGTERM, then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_server_exe"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_exe() -> str:
    """The redis-server executable; skips the test when it is not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    return exe


class RedisServer:
    """One redis-server process; `stop()` then `start()` keeps its port, so clients reconnect to the same URL.

    `persist=True` writes an append-only file fsynced on every write (the production setup), so a restart keeps
    the data; otherwise nothing is persisted. `args` are more `--option value` words for the command line.
    """

    def __init__(self, workdir: Path, *, persist: bool = False, password: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.exe, self.port, self.workdir = redis_server_exe(), free_port(), workdir
        self.password = password
        self.log_path = workdir / "redis.log"
        self._argv = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir),
                      "--daemonize", "no", "--logfile", str(self.log_path)]
        self._argv += ["--appendonly", "yes", "--appendfsync", "always"] if persist else ["--appendonly", "no"]
        if password is not None:
            self._argv += ["--requirepass", password]
        self._argv += args
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> RedisServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Block (bounded) until the server answers PING with PONG: listening, and done LOADING its file."""
        deadline = time.monotonic() + timeout
        while not self._pong():
            assert self.proc is not None, "not started"
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} not ready in {timeout}s: {self.log_tail()}")
            time.sleep(0.02)

    async def ready(self, timeout: float = 15.0) -> None:
        """`wait_ready` without blocking the event loop (the code under test keeps running meanwhile)."""
        await asyncio.to_thread(self.wait_ready, timeout)

    def _pong(self) -> bool:
        probe = b"PING\r\n" if self.password is None else b"AUTH %b\r\nPING\r\n" % self.password.encode()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(probe)
                reply = b""
                while reply.count(b"\r\n") < probe.count(b"\r\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        return False
                    reply += chunk
        except OSError:
            return False
        return reply.split(b"\r\n")[-2] == b"+PONG"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop it by PID: SIGTERM (Redis then writes its AOF out), SIGKILL if it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
