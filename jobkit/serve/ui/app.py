"""The dashboard's Starlette app: pages, the login form and admin actions; `jobkit serve` mounts it at /ui."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...backends import Backend
from ...config import BackendLike, get_backend
from ...errors import ConfigError, JobNotFound
from ...models import Job, JobState
from ...queue import Queue
from . import render
from .reads import Search, find_job, find_jobs, queue_summaries
from .session import Authenticate, Viewer, csrf_ok, forget, remember, token_of

__all__ = ["ui_app"]

EventsUrl = Callable[[Request, Job], str]
BackendSource = BackendLike | Callable[[], Awaitable[Backend]]
# Sent with every response: no script or style but the dashboard's own files, no framing, no referrer to other sites
# (not "no-referrer": with it, a browser sends its own forms with `Origin: null`).
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
     b" connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
QUEUE_ACTIONS = ("pause", "resume", "retry-failed", "clean")
JOB_ACTIONS = ("cancel", "retry")


class _Headers:
    """ASGI middleware adding SECURITY_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class Dashboard:
    """The endpoints, sharing one backend and the token check of the app that mounts them."""

    def __init__(self, backend: BackendSource, authenticate: Authenticate, events_url: EventsUrl | None) -> None:
        self._source = backend
        self._backend = backend if isinstance(backend, Backend) else None
        self.authenticate = authenticate
        self.events_url = events_url

    async def backend(self) -> Backend:
        if self._backend is not None:
            return self._backend
        if callable(self._source):
            return await self._source()
        self._backend = await get_backend(self._source)
        return self._backend

    async def viewer(self, request: Request) -> tuple[str, Viewer] | None:
        token = token_of(request)
        viewer = await self.authenticate(token) if token else None
        return (token, viewer) if token and viewer else None

    # -- pages ---------------------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        session = await self.viewer(request)
        if session is None:
            return _to_login(request)
        backend = await self.backend()
        search = Search.parse(dict(request.query_params), session[1])
        summaries = await queue_summaries(backend)
        jobs = await find_jobs(backend, session[1], search)
        return render.page(request, "home.html", session, summaries=summaries, search=search, jobs=jobs,
                           states=list(JobState), status_code=400 if search.problem else 200)

    async def job(self, request: Request) -> Response:
        session = await self.viewer(request)
        if session is None:
            return _to_login(request)
        queue, job_id = request.query_params.get("queue", ""), request.query_params.get("id", "")
        job = await find_job(await self.backend(), session[1], queue, job_id)
        if job is None:
            return render.page(request, "missing.html", session, queue=queue, job_id=job_id, status_code=404)
        events = self.events_url(request, job) if self.events_url and not job.finished else ""
        return render.page(request, "job.html", session, job=job, events=events)

    async def login(self, request: Request) -> Response:
        back = _local(request, request.query_params.get("next"))
        if request.method == "GET":
            return render.login(request, back)
        if not _same_origin(request):
            return render.refused(request, "Log in from this site's own login page.")
        form = await _form(request)
        token = form.get("token", "").strip()
        viewer = await self.authenticate(token) if token else None
        if viewer is None:
            return render.login(request, back, "That token is not recognised: paste an API token of this server.",
                                status_code=401)
        response = RedirectResponse(back, status_code=303)
        remember(response, request, token)
        return response

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        token = token_of(request)
        if token and not csrf_ok(token, form.get("csrf")):
            return render.refused(request, "This form is stale: reload the page and try again.")
        response = RedirectResponse(render.link(request, "/login"), status_code=303)
        forget(response)
        return response

    # -- actions (admins only) -----------------------------------------------------------------------
    async def job_action(self, request: Request) -> Response:
        form, refusal = await self._admin_form(request, JOB_ACTIONS)
        if refusal is not None:
            return refusal
        action, queue = request.path_params["action"], Queue(form["queue"], backend=await self.backend())
        job_id = form.get("id", "")
        if action == "cancel":
            try:
                job = await queue.cancel(job_id)
            except JobNotFound:
                return render.refused(request, f"There is no job {job_id!r} in queue {queue.name!r}.", 404)
            notice = "cancel-requested" if job.state is JobState.ACTIVE else "cancelled"
        else:
            notice = "retried" if await queue.retry(job_id) else "not-retried"
        return _back(request, form, notice)

    async def queue_action(self, request: Request) -> Response:
        form, refusal = await self._admin_form(request, QUEUE_ACTIONS)
        if refusal is not None:
            return refusal
        action, queue = request.path_params["action"], Queue(form["queue"], backend=await self.backend())
        count = 0
        if action == "pause":
            await queue.pause()
        elif action == "resume":
            await queue.resume()
        elif action == "retry-failed":
            count = await queue.retry_failed()
        else:
            try:
                count = await queue.clean(form.get("state", "completed"))
            except ConfigError as exc:
                return render.refused(request, str(exc), 400)
            except ValueError:
                return render.refused(request, "Clean takes a state: completed, failed or cancelled.", 400)
        return _back(request, form, action, count)

    async def _admin_form(self, request: Request, actions: tuple[str, ...]) -> tuple[dict[str, str], Response | None]:
        """The POSTed form, or the refusal to send instead: no session 401, read-only 403, forged 403."""
        form = await _form(request)
        if not _same_origin(request):
            return form, render.refused(request, "Actions are taken from this site's own pages.")
        if request.path_params["action"] not in actions:
            return form, render.refused(request, f"Unknown action: use one of {', '.join(actions)}.", 404)
        session = await self.viewer(request)
        if session is None:
            return form, render.refused(request, "Log in with an admin token to do that.", 401)
        token, viewer = session
        if not viewer.admin:
            return form, render.refused(request, "This token is read-only: actions need an admin token.", 403)
        if not csrf_ok(token, form.get("csrf")):
            return form, render.refused(request, "This form is stale: reload the page and try again.")
        form.setdefault("queue", "")
        try:
            Queue(form["queue"])
        except ConfigError as exc:
            return form, render.refused(request, str(exc), 400)
        return form, None


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (all the dashboard's forms are), without needing a multipart parser."""
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace")))


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (its Origin header), whatever the cookie."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.url.netloc


def _local(request: Request, target: str | None) -> str:
    """`target` if it is a page of this dashboard, else the dashboard's home: no redirect leaves the site."""
    home = render.link(request, "/")
    if target and target.startswith(home) and not target.startswith("//") and "\\" not in target:
        return target
    return home


def _to_login(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(render.link(request, "/login", next=here), status_code=303)


def _back(request: Request, form: dict[str, str], notice: str, count: int = 0) -> Response:
    back = _local(request, form.get("back"))
    joiner = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{joiner}{urlencode({'notice': notice, 'n': count})}", status_code=303)


def ui_app(backend: BackendSource = None, *, authenticate: Authenticate, events_url: EventsUrl | None = None
           ) -> Starlette:
    """The dashboard as an ASGI app to mount (`jobkit.serve.app()` mounts it at /ui): `backend` a backend, its URL,
    or an async function returning the backend; `authenticate` maps an API token to a viewer (its owner and whether
    it is an admin) or None; `events_url` gives a job's Server-Sent Events URL, for its live progress."""
    ui = Dashboard(backend, authenticate, events_url)
    routes = [
        Route("/", ui.home, name="home"),
        Route("/job", ui.job, name="job"),
        Route("/login", ui.login, methods=["GET", "POST"], name="login"),
        Route("/logout", ui.logout, methods=["POST"], name="logout"),
        Route("/job/{action:str}", ui.job_action, methods=["POST"], name="job_action"),
        Route("/queue/{action:str}", ui.queue_action, methods=["POST"], name="queue_action"),
        Mount("/static", StaticFiles(packages=[("jobkit.serve.ui", "static")]), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Headers)
    return app
