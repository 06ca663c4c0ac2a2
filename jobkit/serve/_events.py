"""GET /jobs/{id}/events: a job's progress and state as Server-Sent Events, resumable with Last-Event-ID.

A fresh stream starts with a `snapshot` (the job as it is), then each `progress` and `state` event, each with the
backend's event id; it ends after the job's final state. A client that reconnects with `Last-Event-ID` gets every
retained event after that id first, so nothing between the two streams is lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..backends import Backend
from ..models import Job, JobEvent
from ._auth import principal
from ._scope import events, find
from ._state import job_view, state

__all__ = ["routes"]

BACKLOG_IDLE = 1.0  # seconds of quiet after which a resumed stream of a finished job knows its backlog is out


def _message(ev: JobEvent) -> ServerSentEvent:
    if ev.event == "progress" and ev.progress is not None:
        body = {"job_id": ev.job_id, **ev.progress.model_dump(mode="json")}
        return ServerSentEvent(json.dumps(body), event="progress", id=ev.id or None)
    body = {"job_id": ev.job_id, "event": ev.event, "state": ev.state.value, "attempt": ev.attempt,
            "error": ev.error, "at": ev.at}
    return ServerSentEvent(json.dumps(body), event="state", id=ev.id or None)


async def _stream(backend: Backend, job: Job, feed: AsyncIterator[JobEvent], resumed: bool,
                  timeout: float | None) -> AsyncIterator[ServerSentEvent]:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        now = await backend.get(job.queue, job.id) or job  # read after the feed went live: nothing is missed
        if not resumed:
            yield ServerSentEvent(json.dumps(job_view(now)), event="snapshot")
            if now.finished:
                return
        idle = BACKLOG_IDLE if now.finished else None
        while True:
            wait = idle if deadline is None else min(idle or 1e9, deadline - loop.time())
            if wait is not None and wait <= 0:
                return
            try:
                ev = await asyncio.wait_for(feed.__anext__(), wait)
            except (asyncio.TimeoutError, StopAsyncIteration):
                if now.finished:  # a resumed stream of a finished job: its last events were trimmed away
                    yield ServerSentEvent(json.dumps(job_view(now)), event="snapshot")
                return
            yield _message(ev)
            if ev.state.finished and ev.event != "progress":
                return
    finally:
        await feed.aclose()  # type: ignore[attr-defined]


async def job_events(request: Request) -> Response:
    p = await principal(request, query_ok=True)
    s = state(request)
    job = await find(request, p)
    since = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or None
    raw = request.query_params.get("timeout")
    try:
        timeout = None if raw is None else float(raw)
    except ValueError:
        timeout = -1.0
    if timeout is not None and not 0 < timeout <= 86400:
        raise HTTPException(400, f"?timeout= takes seconds from 0 to 86400, not {raw!r}")
    feed = await events(s.backend, job, since)
    return EventSourceResponse(_stream(s.backend, job, feed, since is not None, timeout), ping=s.config.ping_every)


routes = [Route("/jobs/{job_id}/events", job_events, methods=["GET"])]
