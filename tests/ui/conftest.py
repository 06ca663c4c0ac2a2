"""The dashboard served in-process (httpx's ASGI transport) over a real SQLite file and the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from jobkit.backends import Backend
from jobkit.serve.ui import Viewer, ui_app
from jobkit.serve.ui.session import csrf_for
from tests.conftest import make_backend


@dataclass(frozen=True)
class Who:
    owner: str | None
    admin: bool


TOKENS = {"admin-token": Who(None, True), "alice-token": Who("alice", False)}


async def authenticate(token: str) -> Viewer | None:
    return TOKENS.get(token)


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = await make_backend(request.param, tmp_path)
    try:
        yield backend
    finally:
        await backend.close()


class Browser:
    """A client of the dashboard, logged in with `token` (None: not logged in)."""

    def __init__(self, backend: Backend, token: str | None) -> None:
        app = ui_app(backend, authenticate=authenticate, events_url=lambda request, job: f"/events/{job.id}")
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui.test")
        if token:
            self.http.cookies.set("jobkit_token", token, domain="ui.test")

    async def page(self, path: str = "/", **params: str) -> httpx.Response:
        return await self.http.get(path, params=params)

    async def post(self, path: str, **form: str) -> httpx.Response:
        return await self.http.post(path, data=form)

    def csrf(self) -> str:
        token = self.http.cookies.get("jobkit_token")
        assert token
        return csrf_for(token)


@pytest.fixture
async def browse(store: Backend) -> AsyncIterator[Callable[[str | None], Browser]]:
    opened: list[Browser] = []

    def open_as(token: str | None) -> Browser:
        opened.append(Browser(store, token))
        return opened[-1]

    yield open_as
    for b in opened:
        await b.http.aclose()
