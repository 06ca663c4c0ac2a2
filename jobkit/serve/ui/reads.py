"""What the dashboard shows, read through the public Queue API: queue summaries and job searches."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import timedelta

from ...backends import Backend
from ...errors import ConfigError
from ...metrics import Metrics
from ...models import Job, JobState, QueueCounts, check_owner, tag_filter
from ...queue import Queue
from .session import Viewer

__all__ = ["MAX_LIMIT", "QueueSummary", "Search", "find_job", "find_jobs", "queue_summaries", "scope"]

MAX_LIMIT = 200
SPAN = timedelta(minutes=30)  # of the queues' sparklines and rates


@dataclass
class QueueSummary:
    name: str
    counts: QueueCounts
    metrics: Metrics  # over SPAN, minute by minute

    @property
    def throughput(self) -> list[int]:
        """Jobs finished (completed or failed) in each minute of the span, oldest first."""
        return [c + f for c, f in zip(self.metrics.completed, self.metrics.failed, strict=True)]

    @property
    def per_minute(self) -> float:
        """Mean jobs finished per minute over the span."""
        return sum(self.throughput) / len(self.throughput)


def scope(viewer: Viewer) -> str | None:
    """The owner every job read of `viewer` is filtered by, in the backend: None for an admin (every job)."""
    return None if viewer.admin else viewer.owner


@dataclass
class Search:
    """A job search from the page's query string; `problem` says what was wrong with it, if anything."""

    id: str = ""
    queue: str = ""
    state: JobState | None = None
    task: str = ""
    owner: str | None = None  # an admin's search by owner; an owner token always reads its own
    tag: tuple[str, str] | None = None
    offset: int = 0
    limit: int = 50
    problem: str = ""
    params: dict[str, str] = field(default_factory=dict)

    FIELDS = ("id", "queue", "state", "task", "owner", "tag", "offset", "limit")

    @classmethod
    def parse(cls, query: dict[str, str], viewer: Viewer) -> Search:
        given = {k: v.strip() for k, v in query.items() if k in cls.FIELDS}
        search = cls(id=given.get("id", ""), queue=given.get("queue", ""), task=given.get("task", ""),
                     params={k: v for k, v in given.items() if v and k != "offset"})
        try:
            search.owner = check_owner(given.get("owner") or None) if viewer.admin else scope(viewer)
            search.tag = tag_filter(given["tag"]) if given.get("tag") else None
            search.state = _state(given.get("state", ""))
            search.offset = max(0, int(given.get("offset") or 0))
            search.limit = min(MAX_LIMIT, max(1, int(given.get("limit") or 50)))
        except ConfigError as exc:
            search.problem = str(exc)
        except ValueError:
            search.problem = "offset and limit are whole numbers"
        return search


def _state(name: str) -> JobState | None:
    try:
        return JobState(name) if name else None
    except ValueError:
        raise ConfigError(f"unknown state {name!r}: choose one of {', '.join(s.value for s in JobState)}") from None


async def queue_summaries(backend: Backend) -> list[QueueSummary]:
    """Every queue's counts and its metrics over the last half hour, by name."""
    summaries = []
    for name in await backend.queues():
        queue = Queue(name, backend=backend)
        summaries.append(QueueSummary(name, await queue.counts(), await queue.metrics(since=SPAN)))
    return summaries


async def find_job(backend: Backend, viewer: Viewer, queue: str, job_id: str) -> Job | None:
    """The job, or None when there is none or it is another owner's (never shown)."""
    if not queue or not job_id:
        return None
    return await Queue(queue, backend=backend).get(job_id, owner=scope(viewer))


async def find_jobs(backend: Backend, viewer: Viewer, search: Search) -> list[Job]:
    """The page of jobs matching `search`, newest first, across every queue unless it names one."""
    if search.problem:
        return []
    names = [search.queue] if search.queue else await backend.queues()
    if search.id:
        found = [await find_job(backend, viewer, name, search.id) for name in names]
        return [j for j in found if j is not None and _matches(j, search)]
    if len(names) == 1:
        return await _page(backend, names[0], search, search.offset, search.limit)
    pages = [await _page(backend, name, search, 0, search.offset + search.limit) for name in names]
    merged = heapq.merge(*pages, key=lambda j: (j.created_at, j.seq), reverse=True)
    return list(merged)[search.offset:search.offset + search.limit]


async def _page(backend: Backend, queue: str, search: Search, offset: int, limit: int) -> list[Job]:
    return await Queue(queue, backend=backend).jobs(search.state, name=search.task or None, owner=search.owner,
                                                    tag=search.tag, offset=offset, limit=limit)


def _matches(job: Job, search: Search) -> bool:
    """Whether a job found by id also passes the search's other filters (it was read scoped to the viewer)."""
    return ((search.state is None or job.state is search.state) and (not search.task or job.name == search.task)
            and (search.owner is None or job.owner == search.owner)
            and (search.tag is None or job.tags.get(search.tag[0]) == search.tag[1]))
