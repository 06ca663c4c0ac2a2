"""`app()`: the Starlette application of `jobkit serve`, to run with uvicorn or mount in your own ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from ..backends import Backend
from ..config import connect
from ..errors import BackendError, ConfigError, PayloadError
from ..models import Job
from . import _events, _health, _jobs, _openapi, _queues, _uploads
from ._auth import TokenStore
from ._config import ServeConfig, TokenEntry
from ._scope import QueueNames
from ._signing import load_secret
from ._state import ServeState
from .ui import ui_app
from .webhooks import WebhookSender

__all__ = ["app", "routes"]

log = logging.getLogger("jobkit.serve")


def routes() -> list[BaseRoute]:
    """Every route of the API (a mounted UI or sender adds its own beside them)."""
    return [*_jobs.routes, *_events.routes, *_queues.routes, *_health.routes, *_openapi.routes]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _bad_input(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=422 if isinstance(exc, PayloadError) else 400)


async def _backend_down(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": f"the backend failed: {exc}"}, status_code=503)


class _Opener:
    """Opens the backend before the first request (a mounted app gets no lifespan events of its own)."""

    def __init__(self, app: ASGIApp, holder: _Holder) -> None:
        self.app, self.holder = app, holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            await self.holder.ready(scope["app"])
        await self.app(scope, receive, send)


class _Holder:
    """The app's backend and background tasks: opened once, closed at shutdown (only what it opened itself)."""

    def __init__(self, config: ServeConfig, backend: Backend | None) -> None:
        self.config, self.given = config, backend
        self.state: ServeState | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    async def ready(self, app: Starlette) -> ServeState:
        if self.state is None:
            async with self._lock:
                if self.state is None:
                    backend = self.given or await connect(self.config.url)
                    await backend.open()
                    self.state = ServeState(self.config, backend, TokenStore(self.config, backend), QueueNames(backend))
                    app.state.jobkit = self.state
                    if self.config.webhooks:
                        sender = WebhookSender(backend, allow=self.config.webhook_allow or None)
                        self.tasks.append(asyncio.ensure_future(sender.run()))
                    if self.config.upload_root is not None:
                        self.tasks.append(asyncio.ensure_future(_uploads.sweep_forever(
                            backend, self.config.upload_root, self.config.upload_sweep_every)))
        return self.state

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.state is not None and self.given is None:
            await self.state.backend.close()
        self.state = None


def _dashboard(holder: _Holder) -> Mount:
    """The /ui web dashboard (jobkit.serve.ui) on this app's backend and API tokens."""

    def ready() -> ServeState:
        assert holder.state is not None, "_Opener readies the app before any request reaches /ui"
        return holder.state

    async def backend() -> Backend:
        return ready().backend

    async def viewer(token: str) -> TokenEntry | None:
        return await ready().tokens.lookup(token)

    def events_url(request: Request, job: Job) -> str:
        api = str(request.scope.get("root_path", "")).removesuffix("/ui")
        return f"{api}/jobs/{quote(job.id, safe='')}/events?{urlencode({'queue': job.queue})}"

    return Mount("/ui", app=ui_app(backend, authenticate=viewer, events_url=events_url))


def app(config: ServeConfig | None = None, *, backend: Backend | None = None, **settings: Any) -> Starlette:
    """The HTTP API as an ASGI app: `config` (or its fields as keyword arguments, e.g. `tasks={"report"}`), and
    optionally a backend you opened yourself (else it connects to `config.url` and closes it at shutdown)."""
    if config is None:
        config = ServeConfig(**settings)
    elif settings:
        raise ConfigError("give app() a ServeConfig or its fields as keyword arguments, not both")
    if config.webhooks:
        load_secret()  # refuse to start without a usable secret, rather than at the first request
    holder = _Holder(config, backend)

    @contextlib.asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[None]:
        await holder.ready(application)
        try:
            yield
        finally:
            await holder.close()

    application = Starlette(routes=[*routes(), _dashboard(holder)], lifespan=lifespan, exception_handlers={
        HTTPException: _http_error, ConfigError: _bad_input, PayloadError: _bad_input, BackendError: _backend_down,
    })
    application.add_middleware(_Opener, holder=holder)
    application.state.jobkit_holder = holder
    return application
