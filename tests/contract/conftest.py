"""Fixtures the contract suite's files share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import jobkit
from jobkit.backends import Backend


@pytest.fixture
def submit(backend: Backend, qname: str) -> Callable[..., Any]:
    """Add a job of `task` to the test's queue and return its handle (no embedded fallback: a worker runs it)."""

    async def go(task: jobkit.Task[Any], payload: Any = None, **kw: Any) -> jobkit.JobHandle[Any]:
        job = await jobkit.Queue(qname, backend=backend).add(task, payload, **kw)
        return jobkit.JobHandle(job, backend, task)

    return go
