"""Fixtures of the serve tests: the app over a real SQLite file or the real Redis, its tokens, a real worker, and a
real uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import jobkit
from jobkit.serve import ServeConfig, TokenEntry, app, hash_token
from tests.conftest import make_backend
from tests.serve import tasks

try:
    import httpx2 as httpx
except ImportError:  # Python 3.10: httpx itself
    import httpx  # type: ignore[no-redef]

TOKENS = {"alice": "tok-alice", "bob": "tok-bob", "admin": "tok-admin"}
ENTRIES = (TokenEntry(sha256=hash_token(TOKENS["alice"]), owner="alice"),
           TokenEntry(sha256=hash_token(TOKENS["bob"]), owner="bob"),
           TokenEntry(sha256=hash_token(TOKENS["admin"]), admin=True))


def auth(who: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}


@dataclass
class Served:
    """The app under test, a client on it, and its backend."""

    backend: jobkit.Backend
    client: Any
    base: str
    app: Any


def config(tmp_path: Path, **changes: Any) -> ServeConfig:
    return ServeConfig(tasks=tasks.ALLOWED, tokens=ENTRIES, upload_root=tmp_path / "uploads", **changes)


@pytest.fixture(params=["sqlite", "redis"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    """The API in-process (httpx's ASGI transport) over a fresh backend."""
    backend = await make_backend(request.param, tmp_path)
    application = app(config(tmp_path), backend=backend)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://jobkit.test", timeout=30) as client:
        try:
            yield Served(backend, client, "http://jobkit.test", application)
        finally:
            await application.state.jobkit_holder.close()
            await backend.close()


@pytest.fixture(params=["sqlite", "redis"])
async def uvicorn_served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    """The API on a real uvicorn on a loopback port, over a fresh backend."""
    backend = await make_backend(request.param, tmp_path)
    application = app(config(tmp_path, ping_every=1.0), backend=backend)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue up before uvicorn accepts them: no waiting for it to start
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="on"))
    running = asyncio.ensure_future(server.serve(sockets=[sock]))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        try:
            yield Served(backend, client, base, application)
        finally:
            server.should_exit = True
            await asyncio.wait_for(running, 10)
            sock.close()
            await backend.close()


@pytest.fixture
async def worker(served: Served) -> AsyncIterator[jobkit.Worker]:
    """A real worker for the test tasks, on the served backend."""
    async with jobkit.Worker([tasks.echo, tasks.fail, tasks.stepper], backend=served.backend, queues=[tasks.QUEUE],
                             handle_signals=False) as w:
        yield w
