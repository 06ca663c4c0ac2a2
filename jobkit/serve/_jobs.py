"""Routes on jobs: submit (JSON or an upload), get, list, cancel (DELETE), retry."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ConfigError, PayloadError
from ..models import Job, JobState
from ..queue import Queue
from . import _uploads
from ._auth import Principal, principal
from ._scope import find, page, queue_names, wait_finished
from ._state import job_json, job_view, state

__all__ = ["routes"]

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"


class SubmitBody(BaseModel):
    """The JSON body of POST /queues/{queue}/jobs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str = Field(min_length=1, max_length=200)
    payload: Any = None
    job_id: str | None = Field(default=None, pattern=ID_PATTERN)
    priority: int | None = Field(default=None, ge=0, le=1000)
    delay: float | None = Field(default=None, ge=0, le=365 * 86400)
    tags: dict[str, str] | None = Field(default=None, description="small labels to find the job by: {'doc': 'd-1'}")
    owner: str | None = Field(default=None, description="admin tokens: whom the job is for (else the token's owner)")


def _float_param(request: Request, name: str, upper: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 <= value <= upper):
        raise HTTPException(400, f"?{name}= takes seconds from 0 to {upper:g}, not {raw!r}")
    return value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


def _valid_body(raw: bytes | dict[str, Any]) -> SubmitBody:
    try:
        return SubmitBody.model_validate_json(raw) if isinstance(raw, bytes) else SubmitBody.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise HTTPException(422, f"invalid body: {problems}") from None


def _owner_for(p: Principal, body: SubmitBody) -> str | None:
    """Whom a submitted job is for: an owner token's owner (it may not name another), or whom an admin names."""
    if p.admin:
        return body.owner if body.owner is not None else p.owner
    if body.owner is not None and body.owner != p.owner:
        raise HTTPException(403, "an owner token submits jobs for its own owner only: leave `owner` out")
    return p.owner


async def _add(request: Request, p: Principal, queue: str, body: SubmitBody) -> Job:
    s = state(request)
    if body.task not in s.config.tasks:
        raise HTTPException(403, f"task {body.task!r} is not one this server lets clients submit (its allow-list:"
                                 f" {', '.join(sorted(s.config.tasks)) or 'empty'})")
    owner = _owner_for(p, body)
    try:
        job = await Queue(queue, backend=s.backend).add(body.task, body.payload, job_id=body.job_id,
                                                        priority=body.priority, delay=body.delay, owner=owner,
                                                        tags=body.tags)
    except (ConfigError, PayloadError) as exc:
        raise HTTPException(422, str(exc)) from None
    if job.owner != owner and not p.admin:  # the id was someone else's: never show the job, never hand it over
        raise HTTPException(409, f"job id {job.id!r} is taken in queue {queue!r}: choose another")
    return job


async def _answer(request: Request, job: Job, wait: float | None) -> Response:
    if wait:
        job = await wait_finished(state(request).backend, job, wait)
    return JSONResponse(job_view(job), status_code=200 if job.finished else 202,
                        headers={"Location": f"/jobs/{quote(job.id, safe='')}?{urlencode({'queue': job.queue})}"})


async def submit(request: Request) -> Response:
    p = await principal(request)
    queue = request.path_params["queue"]
    wait = _float_param(request, "wait", state(request).config.wait_max)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload = await _uploads.receive(request, queue)
        try:
            body = _valid_body({"task": upload.task, "payload": upload.payload, "job_id": upload.job_id})
            job = await _add(request, p, queue, body)
        except BaseException:
            upload.discard()
            raise
        config = state(request).config
        if wait is None and not _flag(request, "async") and upload.size <= config.upload_inline_max_bytes:
            wait = config.wait_inline  # a small upload runs at once: the request waits for its result
        return await _answer(request, job, wait)
    return await _answer(request, await _add(request, p, queue, _valid_body(await request.body())), wait)


async def get_job(request: Request) -> Response:
    p = await principal(request)
    job = await find(request, p)
    return Response(job_json(job), media_type="application/json")


def _states(request: Request) -> set[JobState] | None:
    given = request.query_params.getlist("state")
    try:
        return {JobState(s) for v in given for s in v.split(",")} or None
    except ValueError:
        raise HTTPException(400, "unknown state: use " + ", ".join(s.value for s in JobState)) from None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise HTTPException(400, f"?limit= takes 1 to 500, not {raw!r}")
    return int(raw)


async def list_jobs(request: Request) -> Response:
    p = await principal(request)
    s = state(request)
    queue = request.query_params.get("queue")
    queues = [queue] if queue else await queue_names(s.backend)
    try:
        jobs, cursor = await page(s.backend, p, queues, states=_states(request), task=request.query_params.get("task"),
                                  tag=request.query_params.get("tag"), limit=_limit(request),
                                  cursor=request.query_params.get("cursor"))
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    return JSONResponse({"jobs": [job_view(j) for j in jobs], "next": cursor})


async def cancel_job(request: Request) -> Response:
    p = await principal(request)
    s = state(request)
    job = await find(request, p)
    after = await s.backend.cancel(job.queue, job.id, time.time())
    if after is None:  # removed between the read and the cancel
        raise HTTPException(404, f"no job {job.id!r}")
    return JSONResponse({"id": job.id, "queue": job.queue, "caught": job.state.value, "state": after.state.value,
                         "cancel_requested": after.cancel_requested})


async def retry_job(request: Request) -> Response:
    p = await principal(request)
    s = state(request)
    job = await find(request, p)
    if not await s.backend.retry(job.queue, [job.id], time.time()):  # workers run it: the API never starts one
        raise HTTPException(409, f"job {job.id!r} is {job.state.value}: only failed or cancelled jobs can be retried")
    return JSONResponse({"id": job.id, "queue": job.queue, "state": JobState.WAITING.value})


routes = [
    Route("/queues/{queue}/jobs", submit, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    Route("/jobs/{job_id}/retry", retry_job, methods=["POST"]),
]
