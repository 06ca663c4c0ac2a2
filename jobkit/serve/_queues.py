"""Routes on queues: their counts (any token), and pause, resume, clean and retry-failed (admin tokens)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..backends import Backend
from ..errors import ConfigError
from ..models import JobState
from ..queue import Queue
from ._auth import principal
from ._scope import queue_names
from ._state import state

__all__ = ["routes"]

METRICS_SPAN = timedelta(hours=1)  # the per-minute series GET /queues shows


async def _queue_view(backend: Backend, name: str) -> dict[str, Any]:
    counts, metrics = await asyncio.gather(backend.counts(name),
                                           Queue(name, backend=backend).metrics(since=METRICS_SPAN))
    return {"name": name, "counts": counts.model_dump(mode="json", by_alias=True),
            "metrics": metrics.model_dump(mode="json")}


async def list_queues(request: Request) -> Response:
    """Every queue with its counts and the last hour's metrics (jobs completed and failed per minute, success
    rate, wait and run time percentiles)."""
    await principal(request)
    backend = state(request).backend
    return JSONResponse({"queues": await asyncio.gather(*(_queue_view(backend, q)
                                                          for q in await queue_names(backend)))})


async def _queue(request: Request) -> Queue:
    await principal(request, admin=True)
    return Queue(request.path_params["queue"], backend=state(request).backend)


async def pause(request: Request) -> Response:
    q = await _queue(request)
    await q.pause()
    return JSONResponse({"queue": q.name, "paused": True})


async def resume(request: Request) -> Response:
    q = await _queue(request)
    await state(request).backend.set_paused(q.name, False)  # workers run them: the API never starts one
    return JSONResponse({"queue": q.name, "paused": False})


def _number(request: Request, name: str, default: float, upper: float) -> float:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= upper:
        raise HTTPException(400, f"?{name}= takes a number from 0 to {upper:g}, not {raw!r}")
    return value


async def clean(request: Request) -> Response:
    q = await _queue(request)
    try:
        st = JobState(request.query_params.get("state", JobState.COMPLETED.value))
        removed = await q.clean(st, older_than=_number(request, "older_than", 0.0, 10 * 365 * 86400),
                                limit=int(_number(request, "limit", 1000, 100_000)))
    except (ValueError, ConfigError) as exc:
        raise HTTPException(400, f"cannot clean: {exc}; ?state= is completed, failed or cancelled") from None
    return JSONResponse({"queue": q.name, "state": st.value, "removed": removed})


async def retry_failed(request: Request) -> Response:
    q = await _queue(request)
    moved = await state(request).backend.retry(q.name, None, time.time(), int(_number(request, "limit", 1000, 100_000)))
    return JSONResponse({"queue": q.name, "retried": moved})


routes = [
    Route("/queues", list_queues, methods=["GET"]),
    Route("/queues/{queue}/pause", pause, methods=["POST"]),
    Route("/queues/{queue}/resume", resume, methods=["POST"]),
    Route("/queues/{queue}/clean", clean, methods=["POST"]),
    Route("/queues/{queue}/retry-failed", retry_failed, methods=["POST"]),
]
