"""`Queue`: the producer and admin API of one named queue over a backend."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from . import schedules
from .backends import Backend, FlowSpec
from .config import BackendLike, get_backend
from .deliveries import DeliveryState, WebhookDelivery
from .embedded import wanted
from .errors import ConfigError, JobNotFound
from .handle import JobHandle
from .metrics import Metrics, Since, since_time, summarize
from .models import (
    Backoff,
    ContinuePartial,
    FailFast,
    FlowStatus,
    Job,
    JobEvent,
    JobOptions,
    JobRef,
    JobState,
    QueueCounts,
    Retention,
    Schedule,
    WaitAll,
    check_owner,
    check_tags,
    dump_json,
    flow_policy,
    invalid,
    new_job,
    new_job_ids,
    tag_filter,
    webhook_url,
)
from .task import Task, _registry

__all__ = ["Dependency", "Queue", "dependency_refs"]

Dependency = str | JobRef | Job | JobHandle[Any]  # a job id of the same queue, or a job of any queue


def job_options(
    base: JobOptions, *, priority: int | None = None, attempts: int | None = None, timeout: float | None = None,
    backoff: Backoff | None = None, keep_completed: Retention | None = None, keep_failed: Retention | None = None,
    webhook: str | None = None,
) -> JobOptions:
    """The task's options with the call's overrides; ConfigError for values out of range."""
    if (priority is None and attempts is None and timeout is None and backoff is None and keep_completed is None
            and keep_failed is None and webhook is None):
        return base  # the common call: no override, no dict to build
    changes = {k: v for k, v in {
        "priority": priority, "attempts": attempts, "timeout": timeout, "backoff": backoff,
        "keep_completed": keep_completed, "keep_failed": keep_failed, "webhook": webhook,
    }.items() if v is not None}
    if not changes:
        return base
    try:
        return JobOptions.model_validate({**base.model_dump(), **changes})
    except ValidationError as exc:
        raise invalid("job options", exc) from None


def dependency_refs(queue: str, job_id: str, depends_on: Sequence[Dependency]) -> tuple[JobRef, ...]:
    """The jobs named in `depends_on` (ids of `queue`, or jobs and handles of any queue), each once."""
    if isinstance(depends_on, str | JobRef | Job | JobHandle):
        depends_on = [depends_on]
    refs: dict[JobRef, None] = {}
    for dep in depends_on:
        if isinstance(dep, str):
            ref = JobRef(queue=queue, id=dep)
        elif isinstance(dep, JobRef):
            ref = dep
        elif isinstance(dep, Job | JobHandle):
            ref = JobRef(queue=dep.queue, id=dep.id)
        else:
            raise ConfigError(f"depends_on takes job ids, jobs or job handles, not {type(dep).__name__} ({dep!r})")
        if ref == JobRef(queue=queue, id=job_id):
            raise ConfigError(f"job {job_id} cannot depend on itself")
        refs[ref] = None
    return tuple(refs)


def _visible(job: Job, owner: str | None) -> bool:
    """Whether a read scoped to `owner` (None: unscoped) may see `job`."""
    return owner is None or job.owner == owner


class Queue:
    """A named queue: add jobs, inspect them, and administer the queue (pause, retry, clean)."""

    def __init__(self, name: str = "default", *, backend: BackendLike = None) -> None:
        if not name or not isinstance(name, str) or any(c in name for c in "{}\n"):
            raise ConfigError(f"invalid queue name {name!r}: use a non-empty name without braces or newlines")
        self.name = name
        self._backend_arg = backend
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None

    def __repr__(self) -> str:
        return f"<Queue {self.name!r}>"

    async def backend(self) -> Backend:
        if self._backend is None:
            self._backend = await get_backend(self._backend_arg)
        else:
            await self._backend.open()
        return self._backend

    def _prepare(
        self, task: Task[Any] | str, payloads: list[Any], *, job_ids: Sequence[str | None] | None,
        delay: float | None, now: float, owner: str | None = None, tags: dict[str, str] | None = None, **opts: Any,
    ) -> list[Job]:
        """Validated new jobs of one task, one per payload; PayloadError/ConfigError before anything is queued."""
        t = task if isinstance(task, Task) else _registry.get(task)
        name = task.name if isinstance(task, Task) else task
        if delay is not None and not (delay >= 0 and math.isfinite(delay)):
            raise ConfigError(f"delay must be a finite number of seconds, zero or more, not {delay}")
        if t is not None:
            data, base = t.dump_payloads(payloads), t.options
        else:
            dump_json(payloads, f"payload for task {name!r}")
            data, base = payloads, JobOptions()
        options = job_options(base, **opts)
        owner, tags = check_owner(owner), check_tags(tags)
        fresh = new_job_ids(len(data))
        if job_ids is not None:
            for i, given in enumerate(job_ids):
                if given:
                    if not isinstance(given, str):
                        raise ConfigError(f"job ids are strings, not {type(given).__name__} ({given!r})")
                    fresh[i] = given
        run_at = now + (delay or 0.0)
        queue = self.name
        return [new_job(job_id, name, queue, d, options, now, run_at, owner, tags)
                for job_id, d in zip(fresh, data, strict=True)]

    async def add(
        self, task: Task[Any] | str, data: Any = None, *, job_id: str | None = None, delay: float | None = None,
        priority: int | None = None, attempts: int | None = None, timeout: float | None = None,
        backoff: Backoff | None = None, keep_completed: Retention | None = None, keep_failed: Retention | None = None,
        depends_on: Sequence[Dependency] | None = None,
        policy: FailFast | WaitAll | ContinuePartial | str | None = None, webhook: str | None = None,
        owner: str | None = None, tags: dict[str, str] | None = None,
    ) -> Job:
        """Add one job, validated against its task if registered here; an existing job_id returns that job.

        `depends_on`: jobs it waits for (in WAITING_CHILDREN) before it runs; by default (`policy="fail_fast"`) one
        of them failing or being cancelled fails it at once. Each must exist: JobNotFound, and nothing is queued.
        `owner`: the user the job is for (reads with `owner=` see only that user's jobs); `tags`: small labels to
        find it by, such as {"doc": "d-1"} (see `jobs(tag=...)`).
        `webhook`: a URL POSTed when the job completes or fails for good (see docs/webhooks.md)."""
        jobs = self._prepare(task, [data], job_ids=[job_id], delay=delay, now=time.time(), priority=priority,
                             attempts=attempts, timeout=timeout, backoff=backoff, keep_completed=keep_completed,
                             keep_failed=keep_failed, owner=owner, tags=tags, webhook=webhook)
        if not depends_on:
            if policy is not None:
                raise ConfigError("policy= applies to a job that waits for others: give depends_on=[...] too")
            return (await (await self.backend()).add(jobs))[0]
        job = jobs[0]
        refs = dependency_refs(self.name, job.id, depends_on)
        job.flow = FlowStatus(policy=flow_policy(policy), total=len(refs))
        stored = await (await self.backend()).add_flow([FlowSpec(job, tuple((r, False) for r in refs))])
        assert stored[0] is not None
        return stored[0]

    async def add_bulk(
        self, task: Task[Any] | str, payloads: Iterable[Any], *, delay: float | None = None,
        priority: int | None = None, attempts: int | None = None, timeout: float | None = None,
        job_ids: Sequence[str] | None = None, owner: str | None = None, tags: dict[str, str] | None = None,
        webhook: str | None = None,
    ) -> list[Job]:
        """Add many jobs of one task in one transaction; all are validated first, so a bad one queues none.
        `owner` and `tags` (as in `add`) go to every job."""
        items = list(payloads)
        if job_ids is not None and len(job_ids) != len(items):
            raise ConfigError(f"job_ids has {len(job_ids)} ids for {len(items)} payloads; give one id per payload")
        if not items:
            return []
        jobs = self._prepare(task, items, job_ids=job_ids, delay=delay, now=time.time(), priority=priority,
                             attempts=attempts, timeout=timeout, owner=owner, tags=tags, webhook=webhook)
        return await (await self.backend()).add(jobs)

    async def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        """The job, or None if there is none; with `owner`, None also when it is another owner's (never shown)."""
        job = await (await self.backend()).get(self.name, job_id)
        return job if job is not None and _visible(job, owner) else None

    async def handle(self, job_id: str, *, owner: str | None = None) -> JobHandle[Any]:
        """A handle on an existing job, to await or watch it; JobNotFound if there is none (or, with `owner`, it is
        another owner's)."""
        backend = await self.backend()
        job = await backend.get(self.name, job_id)
        if job is None or not _visible(job, owner):
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return JobHandle(job, backend, _registry.get(job.name))

    async def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a job (see Backend.cancel); JobNotFound if there is none, or, with `owner`, it is another owner's
        (then it is left alone)."""
        backend = await self.backend()
        if owner is not None and await self.get(job_id, owner=owner) is None:  # an owner never changes: no race
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        job = await backend.cancel(self.name, job_id, time.time())
        if job is None:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return job

    async def counts(self) -> QueueCounts:
        return await (await self.backend()).counts(self.name)

    async def jobs(
        self, state: JobState | str | Sequence[JobState | str] | None = None, *, name: str | None = None,
        worker: str | None = None, owner: str | None = None, tag: tuple[str, str] | str | None = None,
        offset: int = 0, limit: int = 100,
    ) -> list[Job]:
        """Jobs newest first, filtered by state(s), task name, the worker holding their lease, their owner and a tag
        (("doc", "d-1") or "doc=d-1"), paged with offset/limit. Owner and tag filters use the backend's indexes."""
        states = None
        if state is not None:
            states = {JobState(s) for s in ([state] if isinstance(state, str | JobState) else state)}
        return await (await self.backend()).list(
            self.name, states=states, name=name, worker=worker, owner=check_owner(owner),
            tag=None if tag is None else tag_filter(tag), offset=offset, limit=limit)

    async def pause(self) -> None:
        """Stop workers from starting this queue's jobs; waiting jobs keep waiting."""
        await (await self.backend()).set_paused(self.name, True)

    async def resume(self) -> None:
        """Let workers start this queue's jobs again (on a local backend, an embedded worker if none serves it)."""
        backend = await self.backend()
        await backend.set_paused(self.name, False)
        await wanted(backend, self.name)

    async def is_paused(self) -> bool:
        return (await self.counts()).paused

    async def set_global_concurrency(self, limit: int | None) -> None:
        """At most `limit` jobs of this queue run at once across every worker (checked atomically as jobs are
        claimed); None lifts the limit. Jobs already running beyond a lowered limit finish; no more start meanwhile."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"global concurrency must be a whole number of at least 1, or None to lift it; not"
                              f" {limit!r} (pause() stops a queue)")
        await (await self.backend()).set_global_concurrency(self.name, limit)

    async def metrics(self, since: Since = None, *, task: str | Task[Any] | None = None) -> Metrics:
        """Jobs completed and failed per minute since `since` (a datetime, a timedelta back from now, epoch seconds;
        default an hour ago; at most 14 days are kept), the success rate, and wait and run time percentiles; of
        every task, or of `task` only."""
        name = task.name if isinstance(task, Task) else task
        now = time.time()
        start = since_time(since, now)
        return summarize(self.name, await (await self.backend()).metrics(self.name, start), start, now, name)

    async def global_concurrency(self) -> int | None:
        """The limit `set_global_concurrency` set, or None."""
        return await (await self.backend()).global_concurrency(self.name)

    async def retry_failed(self, limit: int = 1000) -> int:
        """Send failed jobs back to waiting with fresh attempts; returns how many. On a local backend with no worker
        serving the queue, an embedded worker runs them."""
        backend = await self.backend()
        moved = await backend.retry(self.name, None, time.time(), limit)
        if moved:
            await wanted(backend, self.name)
        return moved

    async def retry(self, job_id: str) -> bool:
        """Send one failed or cancelled job back to waiting (run as `retry_failed`'s are)."""
        backend = await self.backend()
        moved = await backend.retry(self.name, [job_id], time.time()) == 1
        if moved:
            await wanted(backend, self.name)
        return moved

    async def clean(
        self, state: JobState | str = JobState.COMPLETED, *, older_than: float = 0.0, limit: int = 1000
    ) -> int:
        """Remove up to `limit` finished jobs in `state` that finished more than `older_than` seconds ago."""
        st = JobState(state)
        if not st.finished:
            raise ConfigError(f"clean removes finished jobs only (completed, failed, cancelled), not {st.value}")
        return await (await self.backend()).clean(self.name, st, finished_before=time.time() - older_than, limit=limit)

    async def events(self, since: str | None = None, *, owner: str | None = None) -> AsyncIterator[JobEvent]:
        """Every event of this queue's jobs, live; `since` (an event id, or "0") replays retained ones first.
        With `owner`, only the events of that owner's jobs (each event carries its job's owner)."""
        events = await (await self.backend()).subscribe(self.name, since=since)
        try:
            async for ev in events:
                if owner is None or ev.owner == owner:
                    yield ev
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    # -- webhooks ----------------------------------------------------------------------------------
    async def set_webhook(self, url: str | None) -> None:
        """POST to `url` when a job of this queue completes or fails for good, unless the job has its own webhook
        (None: no queue webhook). Deliveries are written with the job's end, and sent by `jobkit webhooks run`."""
        if url is not None:
            try:
                webhook_url(url)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        await (await self.backend()).write_record(self.name, "webhook", "url", url)

    async def webhook(self) -> str | None:
        """The queue's own webhook URL, if set."""
        record = await (await self.backend()).read_record(self.name, "webhook", "url")
        return None if record is None else record.value

    async def webhook_deliveries(self, *, state: DeliveryState | None = None, job_id: str | None = None,
                                 limit: int = 100) -> list[WebhookDelivery]:
        """This queue's webhook deliveries, newest first: pending, delivered or dead, with every attempt."""
        return await (await self.backend()).webhook_deliveries(self.name, state=state, job_id=job_id, limit=limit)

    async def replay_webhook(self, delivery_id: str) -> WebhookDelivery:
        """Send a delivery again now (same webhook-id, fresh retry schedule); JobNotFound if there is none."""
        found = await (await self.backend()).replay_webhook(self.name, delivery_id, time.time())
        if found is None:
            raise JobNotFound(f"no webhook delivery {delivery_id!r} in queue {self.name!r}: list them with"
                              f" `jobkit webhooks list --queue {self.name}`")
        return found

    # -- schedules ---------------------------------------------------------------------------------
    async def schedule(
        self, schedule_id: str, task: Task[Any] | str, payload: Any = None, *, cron: str | None = None,
        every: float | timedelta | None = None, tz: str = "UTC", catch_up: int = 0,
        overlap: schedules.Overlap = "skip", paused: bool | None = None,
    ) -> Schedule:
        """Create or update (by id) a schedule: the workers serving this queue and `task` add one job of it with
        `payload` on each tick of `cron` (in time zone `tz`) or `every` seconds, exactly once per tick.

        `catch_up`: ticks missed while every worker was down are skipped (0), or up to the latest N fire.
        `overlap`: a tick that comes while the previous tick's job is unfinished is skipped ("skip"), waits for
        it ("queue"), or fires anyway ("allow"). The same call again changes nothing; `paused=None` keeps a
        pause."""
        return await schedules.upsert(await self.backend(), self.name, schedule_id, task, payload, cron_expr=cron,
                                      every=every, tz=tz, catch_up=catch_up, overlap=overlap, paused=paused,
                                      now=time.time())

    async def list_schedules(self) -> list[Schedule]:
        """This queue's schedules, by id."""
        return await schedules.list_all(await self.backend(), self.name)

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await schedules.get(await self.backend(), self.name, schedule_id)

    async def remove_schedule(self, schedule_id: str) -> bool:
        """Stop and forget a schedule (jobs it already added stay); False if there was none."""
        return await schedules.remove(await self.backend(), self.name, schedule_id)

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        """Fire no tick of this schedule until `resume_schedule`; ScheduleNotFound if there is none."""
        return await schedules.set_paused(await self.backend(), self.name, schedule_id, True, time.time())

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Fire its ticks again from the next one on (ticks that came while it was paused do not fire)."""
        return await schedules.set_paused(await self.backend(), self.name, schedule_id, False, time.time())
