"""The API's OpenAPI 3.1 schema, declared by hand beside the routes (GET /openapi.json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..models import JobState
from ._jobs import ID_PATTERN, SubmitBody

__all__ = ["routes", "schema"]

Obj = dict[str, Any]


def _ref(name: str) -> Obj:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Obj, description: str) -> Obj:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> Obj:
    why = {400: "bad parameter", 401: "no or unknown token", 403: "not allowed for this token", 404: "no such job",
           409: "conflicts with the job's state", 413: "upload too large", 422: "invalid body or payload",
           503: "the backend failed, or the server's own setup is broken"}
    return {str(c): _json(_ref("Error"), why[c]) for c in codes}


def _query(name: str, schema: Obj, description: str) -> Obj:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, schema: Obj | None = None) -> Obj:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string", "minLength": 1}}


JOB_ID = _path("job_id", {"type": "string", "pattern": ID_PATTERN})
QUEUE = _path("queue", {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,100}$"})
QUEUE_HINT = _query("queue", {"type": "string", "minLength": 1}, "the job's queue (default: looked up in every queue)")
STATES = [s.value for s in JobState]


def _op(summary: str, ok: Obj, *codes: int, params: Sequence[Obj] = (), **extra: Any) -> Obj:
    responses = {**ok, **_errors(400, 401, 503, *codes)}
    return {"summary": summary, "parameters": list(params), "responses": responses, **extra}


def schema() -> Obj:
    job = _ref("Job")
    submit_json = {"application/json": {"schema": _ref("SubmitBody")},
                   "multipart/form-data": {"schema": {
                       "type": "object", "required": ["task", "file"],
                       "properties": {"task": {"type": "string"}, "payload": {"type": "string"},
                                      "file": {"type": "string", "format": "binary"}}}}}
    op_result = {"200": _json({"type": "object"}, "done")}
    paths: Obj = {
        "/queues/{queue}/jobs": {"post": _op(
            "Submit a job (JSON, or a multipart upload)",
            {"200": _json(job, "finished within ?wait="), "202": _json(job, "queued (or still running)")},
            400, 403, 413, 422, params=[QUEUE, _query("wait", {"type": "number", "minimum": 0}, "seconds to wait"),
                                        _query("async", {"type": "boolean"}, "uploads: queue even a small one")],
            requestBody={"required": True, "content": submit_json})},
        "/jobs": {"get": _op("List jobs the token may see, newest first", {"200": _json({
            "type": "object", "required": ["jobs", "next"],
            "properties": {"jobs": {"type": "array", "items": job}, "next": {"type": ["string", "null"]}}}, "a page")},
            400, params=[_query("queue", {"type": "string", "minLength": 1}, "only this queue"),
                         _query("state", {"type": "string", "enum": STATES}, "only this state"),
                         _query("task", {"type": "string"}, "only this task"),
                         _query("tag", {"type": "string", "pattern": "^[^=]+=.+$"}, "only this tag: key=value"),
                         _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size"),
                         _query("cursor", {"type": "string"}, "the `next` of the previous page")])},
        "/jobs/{job_id}": {
            "get": _op("A job", {"200": _json(job, "the job")}, 404, params=[JOB_ID, QUEUE_HINT]),
            "delete": _op("Cancel a job (idempotent); says the state it caught", {"200": _json(_ref("Cancelled"),
                          "cancelled, or cancel requested")}, 404, params=[JOB_ID, QUEUE_HINT])},
        "/jobs/{job_id}/retry": {"post": _op("Retry a failed or cancelled job", op_result, 404, 409,
                                             params=[JOB_ID, QUEUE_HINT])},
        "/jobs/{job_id}/events": {"get": _op(
            "Server-Sent Events: snapshot, progress and state; resumable with Last-Event-ID",
            {"200": {"description": "an event stream",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            400, 404, params=[JOB_ID, QUEUE_HINT, _query("timeout", {"type": "number", "exclusiveMinimum": 0,
                                                                      "maximum": 86400}, "end the stream then")])},
        "/queues": {"get": _op("Queues with their counts", op_result)},
        "/health": {"get": {"summary": "healthy, degraded or unhealthy (details with a token)", "security": [],
                            "parameters": [], "responses": {"200": _json({"type": "object"}, "healthy or degraded"),
                                                            "503": _json({"type": "object"}, "unhealthy")}}},
        "/metrics": {"get": _op("Prometheus metrics (admin)", {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}, 403)},
    }
    for action, summary in (("pause", "Pause a queue"), ("resume", "Resume a queue"),
                            ("retry-failed", "Retry a queue's failed jobs")):
        paths[f"/queues/{{queue}}/{action}"] = {"post": _op(f"{summary} (admin)", op_result, 400, 403,
                                                             params=[QUEUE])}
    paths["/queues/{queue}/clean"] = {"post": _op("Remove finished jobs (admin)", op_result, 400, 403, params=[
        QUEUE, _query("state", {"type": "string", "enum": ["completed", "failed", "cancelled"]}, "which ones"),
        _query("older_than", {"type": "number", "minimum": 0}, "seconds since they finished"),
        _query("limit", {"type": "integer", "minimum": 0}, "at most this many")])}
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobkit", "version": __version__},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
                "Job": {"type": "object", "required": ["id", "name", "queue", "state"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "queue": {"type": "string"},
                    "state": {"type": "string", "enum": STATES}}},
                "Cancelled": {"type": "object", "required": ["id", "caught", "state"], "properties": {
                    "id": {"type": "string"}, "caught": {"type": "string", "enum": STATES},
                    "state": {"type": "string", "enum": STATES}}},
                "SubmitBody": SubmitBody.model_json_schema(),
            },
        },
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(schema())


routes = [Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False)]
