"""Reading a parent's children (and dependencies): `await ctx.children()`, or page by page with `async for`."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Collection, Generator
from typing import Any

from .backends import Backend, ChildLink
from .models import Child, Job, JobState

__all__ = ["Children", "child"]

PAGE = 500  # children read per round trip


def child(link: ChildLink, job: Job | None) -> Child:
    """A ledger line and the child's job as it is now (None once retention removed it)."""
    if job is None:
        return Child(id=link.child.id, queue=link.child.queue, state=link.state or JobState.WAITING,
                     dependency=not link.owned, removed=True)
    return Child(id=job.id, queue=job.queue, name=job.name, state=job.state, data=job.data, result=job.result,
                 error=job.error, dependency=not link.owned)


class Children:
    """A parent's children in the order they were given, read a page at a time.

    `await children` gives them all as a list; `async for c in children` holds one page at a time, for a parent of
    thousands. `state=` keeps only those in the given state(s); the parent's own `flow` counts them without reading
    any child."""

    def __init__(self, backend: Backend, queue: str, job_id: str, *,
                 state: JobState | str | Collection[JobState | str] | None = None, page: int = PAGE) -> None:
        self.backend, self.queue, self.job_id, self.page = backend, queue, job_id, max(1, page)
        if state is None:
            self.states: frozenset[JobState] | None = None
        elif isinstance(state, str | JobState):
            self.states = frozenset({JobState(state)})
        else:
            self.states = frozenset(JobState(s) for s in state)

    async def __aiter__(self) -> AsyncIterator[Child]:
        offset = 0
        while True:
            lines = await self.backend.children(self.queue, self.job_id, offset=offset, limit=self.page)
            for link, job in lines:
                c = child(link, job)
                if self.states is None or c.state in self.states:
                    yield c
            if len(lines) < self.page:
                return
            offset += len(lines)

    async def all(self) -> builtins.list[Child]:
        """Every child (matching `state=`), in order."""
        return [c async for c in self]

    def __await__(self) -> Generator[Any, None, builtins.list[Child]]:
        return self.all().__await__()
