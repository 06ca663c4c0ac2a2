"""Flows on every backend: a parent waits for its children (nested, on other queues), its policy decides what a
failed child does, dependencies, idempotent re-runs, cancel, retention holds, and reading children page by page."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState

runs: Counter[str] = Counter()  # job id -> attempts run
broken: set[str] = set()  # payload keys whose jobs fail


@jobkit.task(name="f.part")
async def part(ctx: jobkit.Context, p: dict[str, Any]) -> int:
    runs[ctx.job_id] += 1
    if p.get("key") in broken:
        raise jobkit.Unrecoverable(f"part {p['n']} is broken")
    return int(p["n"])


@jobkit.task(name="f.merge")
async def merge(ctx: jobkit.Context, p: dict[str, Any]) -> dict[str, Any]:
    runs[ctx.job_id] += 1
    children = await ctx.children()
    assert ctx.flow is not None
    return {"sum": sum(c.result for c in children if c.state is JobState.COMPLETED and isinstance(c.result, int)),
            "missing": [c.id for c in children if c.state is not JobState.COMPLETED],
            "counted": [ctx.flow.completed, ctx.flow.failed, ctx.flow.cancelled, ctx.flow.total]}


TASKS = [part, merge]


def q2(qname: str) -> str:
    return qname + "-b"


@pytest.fixture
async def worker(backend: Backend, qname: str) -> AsyncIterator[jobkit.Worker]:
    w = jobkit.Worker(TASKS, backend=backend, queues=[qname, q2(qname)], concurrency=8, lease=5, grace=2,
                      handle_signals=False)
    async with w:
        yield w


def kids(qname: str, ns: list[int], key: str = "", **opts: Any) -> list[Any]:
    return [(part, {"n": n, "key": f"{key}{n}"}, {"queue": qname, **opts, **({"job_id": f"{key}{n}"} if key else {})})
            for n in ns]


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async def check() -> None:
        while not await pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(check(), timeout)


async def test_parent_waits_for_children_then_reads_them(backend: Backend, qname: str, worker: jobkit.Worker) -> None:
    h = await jobkit.flow(merge, {}, children=kids(qname, [1, 2, 3]), queue=qname, backend=backend)
    assert h.last.state is JobState.WAITING_CHILDREN and h.last.flow is not None and h.last.flow.total == 3
    result = await h.result(timeout=10)
    assert result == {"sum": 6, "missing": [], "counted": [3, 0, 0, 3]}
    children = await h.children()
    assert [(c.queue, c.name, c.state, c.result, c.dependency) for c in children] == [
        (qname, "f.part", JobState.COMPLETED, n, False) for n in (1, 2, 3)]
    assert all(c.data == {"n": n, "key": str(n)} for c, n in zip(children, (1, 2, 3), strict=True))
    status = await h.children_progress()
    assert status is not None and (status.total, status.completed, status.pending) == (3, 3, 0)
    job = await h.job()
    assert [e.state for e in job.history][:2] == [JobState.WAITING_CHILDREN, JobState.WAITING]
    child = await backend.get(qname, children[0].id)
    assert child is not None and child.parent == jobkit.JobRef(queue=qname, id=h.id)


async def test_children_on_other_queues_and_nested(backend: Backend, qname: str, worker: jobkit.Worker) -> None:
    sub = jobkit.FlowNode(merge, {}, children=kids(q2(qname), [10, 20]), queue=q2(qname), job_id="sub")
    h = await jobkit.flow(merge, {}, children=[*kids(q2(qname), [1]), sub, *kids(qname, [2])], queue=qname,
                          backend=backend)
    result = await h.result(timeout=10)
    assert result["missing"] == [] and result["counted"] == [3, 0, 0, 3]
    children = await h.children()
    assert [c.queue for c in children] == [q2(qname), q2(qname), qname]
    assert children[1].id == "sub" and children[1].result["sum"] == 30
    assert result["sum"] == 1 + 2  # a nested parent's result is not an int: left out of the sum


async def test_fail_fast_fails_parent_and_cancels_unstarted(backend: Backend, qname: str,
                                                            worker: jobkit.Worker) -> None:
    key = uuid.uuid4().hex
    broken.add(f"{key}1")
    held = "held-" + qname
    await jobkit.Queue(held, backend=backend).pause()  # its children never start
    h = await jobkit.flow(merge, {}, children=[*kids(qname, [1], key), *kids(held, [2, 3], key)], queue=qname,
                          backend=backend)
    with pytest.raises(jobkit.JobFailed, match=f"child {key}1 .f.part. failed: Unrecoverable: part 1 is broken"):
        await h.result(timeout=10)
    # Children on another queue hear of the parent's failure, and the parent of their cancellation, through the
    # queues' outboxes on Redis (docs/flows.md): a step after the parent's own end, so wait for it, bounded.

    async def settled() -> bool:
        status = await h.children_progress()
        return status is not None and status.cancelled == 2

    await until(settled)
    children = await h.children()
    assert [c.state for c in children] == [JobState.FAILED, JobState.CANCELLED, JobState.CANCELLED]
    status = await h.children_progress()
    assert status is not None and (status.failed, status.cancelled, status.completed) == (1, 2, 0)
    assert runs[h.id] == 0, "the parent never ran"


async def test_wait_all_runs_parent_with_failures(backend: Backend, qname: str, worker: jobkit.Worker) -> None:
    key = uuid.uuid4().hex
    broken.add(f"{key}2")
    h = await jobkit.flow(merge, {}, children=kids(qname, [1, 2, 3], key), policy="wait_all", queue=qname,
                          backend=backend)
    result = await h.result(timeout=10)
    assert result == {"sum": 4, "missing": [f"{key}2"], "counted": [2, 1, 0, 3]}
    failed = await h.children(state="failed")
    assert [c.id for c in failed] == [f"{key}2"] and "part 2 is broken" in (failed[0].error or "")


async def test_continue_partial(backend: Backend, qname: str, worker: jobkit.Worker) -> None:
    key = uuid.uuid4().hex
    broken.update({f"{key}1", f"{key}2"})
    ok = await jobkit.flow(merge, {}, children=kids(qname, [1, 3, 4], key), backend=backend, queue=qname,
                           policy=jobkit.ContinuePartial(max_failed=0.34))
    assert (await ok.result(timeout=10))["missing"] == [f"{key}1"]
    broken.update({f"{key}x1", f"{key}x2"})
    too_many = await jobkit.flow(merge, {}, children=kids(qname, [1, 2, 5], key + "x"), backend=backend,
                                 queue=qname, policy=jobkit.ContinuePartial(max_failed=0.34))
    with pytest.raises(jobkit.JobFailed, match=r"2 of 3 children failed or were cancelled \(67%\), more than"
                                               r" max_failed=0.34 allows"):
        await too_many.result(timeout=10)
    with pytest.raises(jobkit.ConfigError, match="max_failed"):
        jobkit.ContinuePartial(max_failed=1.5)
    with pytest.raises(jobkit.ConfigError, match="unknown flow policy"):
        await jobkit.flow(merge, {}, children=kids(qname, [1]), policy="sometimes", backend=backend)


async def test_depends_on(backend: Backend, qname: str, worker: jobkit.Worker) -> None:
    q = jobkit.Queue(qname, backend=backend)
    other = jobkit.Queue(q2(qname), backend=backend)
    await worker.started.wait()
    first = await q.add(part, {"n": 5, "key": "a"}, job_id="first", delay=0.3)  # not done before `then` is added
    elsewhere = await other.add(part, {"n": 7, "key": "b"}, delay=0.3)
    then = await q.add(merge, {}, depends_on=["first", elsewhere])
    assert then.state is JobState.WAITING_CHILDREN
    handle = jobkit.JobHandle(then, backend, merge)
    assert (await handle.result(timeout=10))["sum"] == 12
    assert [c.dependency for c in await handle.children()] == [True, True]
    done = await backend.get(qname, first.id)
    assert done is not None and done.parent is None and done.dependents == (jobkit.JobRef(queue=qname, id=then.id),)
    # a dependency that already completed: the job runs at once
    after = await q.add(merge, {}, depends_on=[first])
    assert (await jobkit.JobHandle(after, backend, merge).result(timeout=10))["sum"] == 5


async def test_depends_on_missing_or_failed(backend: Backend, qname: str, worker: jobkit.Worker) -> None:
    q = jobkit.Queue(qname, backend=backend)
    with pytest.raises(jobkit.JobNotFound, match="depends on job nope, which is not in queue"):
        await q.add(merge, {}, job_id="lonely", depends_on=["nope"])
    assert await q.get("lonely") is None and (await q.counts()).total == 0, "nothing was queued"
    with pytest.raises(jobkit.ConfigError, match="cannot depend on itself"):
        await q.add(merge, {}, job_id="me", depends_on=["me"])
    key = uuid.uuid4().hex
    broken.add(key)
    bad = await q.add(part, {"n": 1, "key": key})
    then = await q.add(merge, {}, depends_on=[bad.id])
    with pytest.raises(jobkit.JobFailed, match=f"dependency {bad.id} .f.part. failed"):
        await jobkit.JobHandle(then, backend, merge).result(timeout=10)
    anyway = await q.add(merge, {}, depends_on=[bad.id], policy="wait_all")
    assert (await jobkit.JobHandle(anyway, backend, merge).result(timeout=10))["missing"] == [bad.id]


async def test_rerun_with_same_ids_reruns_only_what_did_not_complete(backend: Backend, qname: str,
                                                                      worker: jobkit.Worker) -> None:
    key = uuid.uuid4().hex
    broken.add(f"{key}2")
    children = kids(qname, [1, 2, 3], key)
    h = await jobkit.flow(merge, {}, children=children, job_id=f"{key}p", queue=qname, backend=backend,
                          policy="wait_all")
    assert (await h.result(timeout=10))["missing"] == [f"{key}2"]
    assert runs[f"{key}1"] == runs[f"{key}2"] == runs[f"{key}p"] == 1
    broken.discard(f"{key}2")
    again = await jobkit.flow(merge, {}, children=children, job_id=f"{key}p", queue=qname, backend=backend,
                              policy="wait_all")
    assert again.id == h.id and again.last.state is JobState.WAITING_CHILDREN
    assert await again.result(timeout=10) == {"sum": 6, "missing": [], "counted": [3, 0, 0, 3]}
    assert (runs[f"{key}1"], runs[f"{key}2"], runs[f"{key}3"], runs[f"{key}p"]) == (1, 2, 1, 2)
    third = await jobkit.flow(merge, {}, children=children, job_id=f"{key}p", queue=qname, backend=backend)
    assert third.last.state is JobState.COMPLETED, "a flow that completed through and through stays as it is"
    assert runs[f"{key}p"] == 2


async def test_rerun_of_a_fail_fast_flow(backend: Backend, qname: str, worker: jobkit.Worker) -> None:
    key = uuid.uuid4().hex
    broken.add(f"{key}1")
    held = "held-" + qname
    await jobkit.Queue(held, backend=backend).pause()
    children = [*kids(qname, [1], key), *kids(held, [2], key)]
    h = await jobkit.flow(merge, {}, children=children, job_id=f"{key}p", queue=qname, backend=backend)
    with pytest.raises(jobkit.JobFailed):
        await h.result(timeout=10)
    broken.discard(f"{key}1")
    await jobkit.Queue(held, backend=backend).resume()
    w2 = jobkit.Worker(TASKS, backend=backend, queues=[held], handle_signals=False)
    async with w2:
        again = await jobkit.flow(merge, {}, children=children, job_id=f"{key}p", queue=qname, backend=backend)
        assert (await again.result(timeout=10))["sum"] == 3
    assert runs[f"{key}1"] == 2 and runs[f"{key}2"] == 1


async def test_cancel_parent_cancels_unfinished_children(backend: Backend, qname: str) -> None:
    sub = jobkit.FlowNode(merge, {}, children=kids(qname, [3]), queue=qname)
    h = await jobkit.flow(merge, {}, children=[*kids(qname, [1, 2]), sub], queue=qname, backend=backend)
    job = await h.cancel()
    assert job.state is JobState.CANCELLED
    children = await h.children()
    assert [c.state for c in children] == [JobState.CANCELLED] * 3
    [grandchild] = await jobkit.JobHandle(await backend.get(qname, children[2].id), backend).children()  # type: ignore[arg-type]
    assert grandchild.state is JobState.CANCELLED
    assert (await jobkit.Queue(qname, backend=backend).counts()).cancelled == 5


async def test_retention_keeps_children_while_parent_waits(backend: Backend, qname: str) -> None:
    parents = "parents-" + qname
    await jobkit.Queue(parents, backend=backend).pause()
    h = await jobkit.flow(merge, {}, children=kids(qname, [1, 2]), queue=parents, backend=backend)
    w = jobkit.Worker(TASKS, backend=backend, queues=[qname], handle_signals=False)
    w.keep_completed = 0  # as if its tasks kept no completed job at all
    async with w:
        await until(lambda: _state_is(h, JobState.WAITING))
    q = jobkit.Queue(qname, backend=backend)
    assert (await q.counts()).completed == 2, "the children stay while their parent has not run"
    assert await q.clean("completed", older_than=0) == 0
    await jobkit.Queue(parents, backend=backend).resume()
    async with jobkit.Worker(TASKS, backend=backend, queues=[parents], handle_signals=False):
        assert (await h.result(timeout=10))["sum"] == 3
    assert await q.clean("completed", older_than=0) == 2, "released once the parent ended"
    assert [(c.state, c.removed, c.result) for c in await h.children()] == [(JobState.COMPLETED, True, None)] * 2


async def _state_is(h: jobkit.JobHandle[Any], state: JobState) -> bool:
    return (await h.job()).state is state


async def test_large_flow_pages_children(backend: Backend, qname: str) -> None:
    h = await jobkit.flow(merge, {}, children=kids(qname, list(range(1000))), queue=qname, backend=backend)
    counts = await jobkit.Queue(qname, backend=backend).counts()
    assert (counts.waiting, counts.waiting_children) == (1000, 1)
    seen = [c.data["n"] async for c in h.children()]
    assert seen == list(range(1000))
    page = await backend.children(qname, h.id, offset=990, limit=20)
    assert [job.data["n"] for _, job in page if job is not None] == list(range(990, 1000))


async def test_parent_progress_counts_children(backend: Backend, qname: str, watch: Any) -> None:
    h = await jobkit.flow(merge, {}, children=kids(qname, [1, 2]), queue=q2(qname), backend=backend)
    async with watch(backend, q2(qname)) as w, jobkit.Worker([part], backend=backend, queues=[qname],
                                                          handle_signals=False):
        seen = await w.until(lambda e: e.job_id == h.id and e.event == "progress", count=2)
    assert [e.progress.percent for e in seen if e.progress] == [50.0, 100.0]
    assert seen[-1].progress is not None and seen[-1].progress.extra["children"]["completed"] == 2
    assert (await h.job()).state is JobState.WAITING


async def test_bad_flows_are_refused(backend: Backend, qname: str) -> None:
    with pytest.raises(jobkit.ConfigError, match="at least one child"):
        await jobkit.flow(merge, {}, children=[], backend=backend)
    with pytest.raises(jobkit.ConfigError, match="given twice"):
        await jobkit.flow(merge, {}, children=[(part, {"n": 1}, {"job_id": "x", "queue": qname})] * 2,
                          queue=qname, backend=backend)
    with pytest.raises(jobkit.ConfigError, match="unknown child option"):
        await jobkit.flow(merge, {}, children=[(part, {"n": 1}, {"colour": "red"})], backend=backend)
    with pytest.raises(jobkit.PayloadError):
        await jobkit.flow(merge, {}, children=[(part, "not a dict", {"queue": qname})], queue=qname, backend=backend)
    assert (await jobkit.Queue(qname, backend=backend).counts()).total == 0, "nothing was queued"


async def test_submit_depends_on_a_handle(backend: Backend) -> None:
    # a worker of this process serves the tasks' queue first: submit starts no embedded one
    async with jobkit.Worker(TASKS, backend=backend, queues=["default"], handle_signals=False):
        first = await jobkit.submit(part, {"n": 2, "key": "s"}, backend=backend, delay=0.2)
        then = await jobkit.submit(merge, {}, backend=backend, depends_on=[first])
        assert then.queue == "default" and then.last.state is JobState.WAITING_CHILDREN
        assert (await then.result(timeout=10))["sum"] == 2
