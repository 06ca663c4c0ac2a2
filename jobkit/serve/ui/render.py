"""HTML for the dashboard: Jinja2 templates, autoescaped (payloads, names and errors are untrusted), and helpers."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from functools import partial
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ...notebook.fmt import duration, error_summary, timing_text
from .session import Viewer, csrf_for
from .spark import points

__all__ = ["link", "login", "page", "refused"]

ENV = jinja2.Environment(loader=jinja2.PackageLoader("jobkit.serve.ui", "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
NOTICES = {
    "pause": "Queue paused: its waiting jobs wait until it is resumed.",
    "resume": "Queue resumed.",
    "retry-failed": "{n} failed job(s) sent back to waiting.",
    "clean": "{n} job(s) removed.",
    "cancelled": "Job cancelled.",
    "cancel-requested": "Cancel requested: the job stops when its task next checks (ctx.progress, checkpoints).",
    "retried": "Job sent back to waiting.",
    "not-retried": "Not retried: only a failed or cancelled job can be.",
}


def link(request: Request, path: str, **query: Any) -> str:
    """The path of dashboard page `path` (wherever the dashboard is mounted), with `query` where not empty."""
    base = str(request.scope.get("root_path", "")).rstrip("/")
    given = {k: v for k, v in query.items() if v not in (None, "")}
    return base + path + (f"?{urlencode(given)}" if given else "")


def when(at: float | None) -> str:
    if at is None:
        return "—"
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


ENV.filters.update(when=when, pretty=pretty, error_summary=error_summary, spark=points, duration=duration)


def page(request: Request, template: str, session: tuple[str, Viewer], *, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    """A page for a logged-in viewer: its forms carry the session's CSRF token; a finished action's notice shown."""
    token, viewer = session
    query = request.query_params
    notice = NOTICES.get(query.get("notice", ""), "")
    count = query.get("n", "0")
    here = link(request, request.url.path[len(link(request, "")):] or "/",
                **{k: v for k, v in query.items() if k not in ("notice", "n")})
    return _html(request, template, status_code, viewer=viewer, csrf=csrf_for(token), here=here,
                 notice=notice.format(n=int(count) if count.isdigit() else 0), **context)


def login(request: Request, back: str, problem: str = "", status_code: int = 200) -> HTMLResponse:
    return _html(request, "login.html", status_code, viewer=None, notice="", back=back, problem=problem)


def refused(request: Request, message: str, status_code: int = 403) -> HTMLResponse:
    return _html(request, "refused.html", status_code, viewer=None, notice="", message=message)


def _html(request: Request, template: str, status_code: int, **context: Any) -> HTMLResponse:
    now = time.time()
    html = ENV.get_template(template).render(link=partial(link, request), now=now,
                                             timing=partial(timing_text, now=now), **context)
    return HTMLResponse(html, status_code=status_code)
