"""Serves the dashboard at /ui with a job events stream, for check_ui.py (until `jobkit serve` mounts it)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route

import jobkit
from jobkit.serve.ui import Viewer, ui_app


def main() -> None:
    url, port, tokens = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])

    class Who:
        def __init__(self, owner: str | None, admin: bool) -> None:
            self.owner, self.admin = owner, admin

    async def authenticate(token: str) -> Viewer | None:
        entry = tokens.get(token)
        return Who(entry.get("owner"), bool(entry.get("admin"))) if entry else None

    async def events(request: Request) -> Response:
        queue = jobkit.Queue(request.query_params["queue"], backend=url)

        async def stream() -> AsyncIterator[str]:
            async for ev in queue.events():
                if ev.job_id == request.path_params["job_id"]:
                    yield f"event: {ev.event}\ndata: {ev.model_dump_json()}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    app = Starlette(routes=[
        Route("/jobs/{job_id}/events", events),
        Mount("/ui", ui_app(url, authenticate=authenticate,
                            events_url=lambda r, j: f"/jobs/{j.id}/events?queue={j.queue}")),
    ])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
