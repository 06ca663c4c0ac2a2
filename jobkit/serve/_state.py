"""What every route reads from `request.app.state.jobkit`: the config, the backend and the token store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from ..backends import Backend
from ..models import Job
from ._auth import TokenStore
from ._config import ServeConfig
from ._scope import QueueNames

__all__ = ["ServeState", "job_json", "job_view", "state"]

HIDDEN = {"checkpoint", "lease_until", "seq"}  # internals a client has no use for


@dataclass
class ServeState:
    config: ServeConfig
    backend: Backend
    tokens: TokenStore
    names: QueueNames


def state(conn: HTTPConnection) -> ServeState:
    found: ServeState = conn.app.state.jobkit
    return found


def job_view(job: Job) -> dict[str, Any]:
    """A job as the API shows it (JSON), `owner` and `tags` always present."""
    return {"owner": None, "tags": {}, **job.model_dump(mode="json", exclude=HIDDEN)}


def job_json(job: Job) -> bytes:
    """`job_view(job)` as JSON, written by pydantic-core in one pass (a third of the time of dict, then json.dumps:
    the single-job routes are the API's busiest)."""
    body: bytes = job.__pydantic_serializer__.to_json(job, exclude=HIDDEN)
    # A job's JSON leaves out an owner of None and empty tags (stored jobs stay small): the API always shows both.
    missing = (b"" if job.owner is not None else b'"owner":null,') + (b"" if job.tags else b'"tags":{},')
    return b"{" + missing + body[1:] if missing else body
