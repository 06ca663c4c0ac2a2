"""An ASGI app served by uvicorn on a loopback port, in a thread of its own: FakeLLM's server and test receivers."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["LoopbackServer"]

START_WITHIN = 10.0  # seconds


class LoopbackServer:
    """`start()` binds 127.0.0.1:`port` (0: a free one; reused addresses allowed, so a restart may take it again),
    serves `app` and returns once uvicorn listens; `stop()` asks uvicorn to exit and joins its thread."""

    def __init__(self, app: Any, *, port: int = 0, name: str = "loopback-server", **config: Any) -> None:
        self.app, self.port, self.name = app, port, name
        self.config = {"log_level": "error", "lifespan": "off", "access_log": False, **config}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = server = uvicorn.Server(uvicorn.Config(self.app, **self.config))
        self._thread = thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=self.name,
                                                 daemon=True)
        thread.start()
        deadline = time.monotonic() + START_WITHIN
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{self.name} did not start within {START_WITHIN:g} s")
            time.sleep(0.01)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
