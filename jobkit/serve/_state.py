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

__all__ = ["ServeState", "job_view", "state"]

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
