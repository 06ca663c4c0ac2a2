"""A real HTTP receiver on loopback (Starlette on uvicorn, in a thread of its own) that records every POST and answers
with the status codes it is told, for the webhook tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jobkit._loopback import LoopbackServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    ended: float = 0.0


@dataclass
class Receiver:
    answers: list[int] = field(default_factory=list)  # status codes to answer first, in order; then 200
    delay: float = 0.0  # seconds each answer takes (a slow receiver)
    port: int = 0
    got: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    _server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self._server = LoopbackServer(self._app(), port=self.port, name="the webhook receiver")
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        """Block until `n` POSTs have been answered (bounded), and return them."""
        with self.cond:
            assert self.cond.wait_for(lambda: sum(1 for r in self.got if r.ended) >= n, timeout), (
                f"{len(self.got)} POSTs within {timeout}s, wanted {n}")
            return list(self.got)

    def _app(self) -> Any:
        import asyncio

        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def hook(request: Request) -> Response:
            got = Received(dict(request.headers), await request.body(), time.time())
            with self.cond:
                self.got.append(got)
                status = self.answers.pop(0) if self.answers else 200
            if self.delay:
                await asyncio.sleep(self.delay)
            headers = {"location": f"http://127.0.0.1:{self.port}/elsewhere"} if 300 <= status < 400 else None
            with self.cond:
                got.ended = time.time()
                self.cond.notify_all()
            return Response("ok" if status < 300 else "no", status_code=status, headers=headers)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"]),
                                 Route("/elsewhere", hook, methods=["POST", "GET"])])
