"""Owners and tags on every backend: stored on the job, listed through the backend's indexes, scoped reads."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState, Outcome


async def test_owner_and_tags_are_stored_and_scope_reads(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    mine = await q.add("t", 1, owner="alice", tags={"doc": "d-1", "kind": "import"})
    theirs = await q.add("t", 2, owner="bob", tags={"doc": "d-1"})
    plain = await q.add("t", 3)
    got = await q.get(mine.id)
    assert got is not None and got.owner == "alice" and got.tags == {"doc": "d-1", "kind": "import"}
    assert (await q.get(plain.id)).owner is None and (await q.get(plain.id)).tags == {}  # type: ignore[union-attr]
    assert await q.get(mine.id, owner="bob") is None, "another owner's job is not found"
    assert (await q.get(mine.id, owner="alice")) == got
    assert await q.get(plain.id, owner="alice") is None, "a job without an owner is no owner's"
    with pytest.raises(jobkit.JobNotFound):
        await q.handle(theirs.id, owner="alice")
    with pytest.raises(jobkit.JobNotFound):
        await q.cancel(theirs.id, owner="alice")
    assert (await q.get(theirs.id)).state is JobState.WAITING, "a refused cancel leaves the job alone"  # type: ignore[union-attr]
    assert (await q.cancel(theirs.id, owner="bob")).state is JobState.CANCELLED


async def test_list_by_owner_and_tag(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    for i in range(6):
        await q.add("t", i, owner="alice" if i % 2 == 0 else "bob", tags={"doc": f"d-{i % 3}"})
    await q.add_bulk("t", [10, 11, 12], owner="carol", tags={"doc": "d-0", "batch": "b1"})
    assert [j.data for j in await q.jobs(owner="alice")] == [4, 2, 0], "newest first"
    assert [j.data for j in await q.jobs(owner="alice", limit=2)] == [4, 2]
    assert [j.data for j in await q.jobs(owner="alice", offset=1, limit=5)] == [2, 0]
    assert [j.data for j in await q.jobs(tag=("doc", "d-0"))] == [12, 11, 10, 3, 0]
    assert [j.data for j in await q.jobs(tag="doc=d-0", owner="bob")] == [3]
    assert [j.data for j in await q.jobs(tag="batch=b1", limit=2)] == [12, 11]
    assert await q.jobs(owner="nobody") == [] and await q.jobs(tag="doc=d-9") == []
    [claimed] = (await backend.claim(qname, "w", limit=1, lease=30, now=time.time())).jobs
    assert claimed.data == 0 and claimed.owner == "alice" and claimed.tags == {"doc": "d-0"}
    assert [j.data for j in await q.jobs(state="active", owner="alice")] == [0]
    assert [j.data for j in await q.jobs(state="waiting", owner="alice")] == [4, 2]
    assert [j.data for j in await q.jobs(state=["waiting", "active"], tag="doc=d-0", owner="alice")] == [0]
    assert await q.jobs(state="active", owner="bob") == []
    assert [j.data for j in await q.jobs(owner="alice", worker="w")] == [0]


async def test_retention_and_clean_remove_jobs_from_the_owner_and_tag_indexes(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add_bulk("t", [0, 1, 2], owner="alice", tags={"doc": "d-1"})
    now = time.time() - 10  # finished in the past, so clean(older_than=0) takes them
    jobs = (await backend.claim(qname, "w", limit=3, lease=30, now=now)).jobs
    await backend.finish(qname, "w", [Outcome(job_id=j.id, state=JobState.COMPLETED) for j in jobs[:2]], now,
                         keep_completed=1)
    await backend.finish(qname, "w", [Outcome(job_id=jobs[2].id, state=JobState.FAILED, error="x")], now + 1)
    assert [j.data for j in await q.jobs(owner="alice")] == [2, 1]
    assert await q.clean("failed") == 1
    assert [j.data for j in await q.jobs(owner="alice")] == [1]
    assert [j.data for j in await q.jobs(tag="doc=d-1")] == [1]
    assert await q.clean("completed") == 1
    assert await q.jobs(owner="alice") == [] and await q.jobs(tag="doc=d-1") == []
    again = await q.add("t", 9, job_id=jobs[0].id, owner="bob")
    assert again.owner == "bob" and [j.data for j in await q.jobs(owner="bob")] == [9], "a removed id is free"


async def test_an_existing_job_id_keeps_its_owner(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    first = await q.add("t", 1, job_id="same", owner="alice")
    second = await q.add("t", 2, job_id="same", owner="bob", tags={"x": "y"})
    assert second.owner == first.owner == "alice" and second.data == 1 and second.tags == {}
    assert await q.jobs(owner="bob") == [] and await q.jobs(tag="x=y") == []


async def test_events_scoped_to_an_owner(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    mine = await q.add("t", 1, owner="alice")
    await q.add("t", 2, owner="bob")
    await q.add("t", 3)
    now = time.time()
    jobs = (await backend.claim(qname, "w", limit=3, lease=30, now=now)).jobs
    await backend.finish(qname, "w", [Outcome(job_id=j.id, state=JobState.COMPLETED) for j in jobs], now)
    assert await q.clean("completed") == 3

    async def follow() -> list[jobkit.JobEvent]:
        seen = []
        async for ev in q.events(since="0", owner="alice"):  # retained events first, then live ones
            seen.append(ev)
            if ev.event == "removed":
                return seen
        return seen

    seen = await asyncio.wait_for(follow(), 10)
    assert {ev.job_id for ev in seen} == {mine.id}
    assert [ev.event for ev in seen] == ["added", "active", "completed", "removed"]
    assert all(ev.owner == "alice" for ev in seen)


async def test_flow_children_take_their_parents_owner(backend: Backend, qname: str) -> None:
    parent = await jobkit.flow("t", 0, children=[("t", 1, {"queue": qname}),
                                                 ("t", 2, {"queue": qname, "owner": "bob", "tags": {"k": "v"}})],
                               queue=qname, backend=backend, owner="alice", tags={"doc": "d-1"})
    q = jobkit.Queue(qname, backend=backend)
    assert sorted(j.data for j in await q.jobs(owner="alice")) == [0, 1]
    assert [j.data for j in await q.jobs(owner="bob", tag="k=v")] == [2]
    assert [j.id for j in await q.jobs(tag="doc=d-1")] == [parent.id]


@pytest.mark.parametrize(("kw", "problem"), [
    ({"owner": ""}, "invalid owner"),
    ({"owner": " alice"}, "invalid owner"),
    ({"owner": "a" * 201}, "invalid owner"),
    ({"owner": 42}, "invalid owner"),
    ({"tags": {"a=b": "c"}}, "invalid tag key"),
    ({"tags": {"doc": ""}}, "invalid value"),
    ({"tags": {"doc": "x\n"}}, "invalid value"),
    ({"tags": {f"k{i}": "v" for i in range(21)}}, "at most 20 tags"),
    ({"tags": ["doc"]}, "tags are a dict"),
])
async def test_bad_owners_and_tags_are_refused(backend: Backend, qname: str, kw: dict[str, Any], problem: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    with pytest.raises(jobkit.ConfigError, match=problem):
        await q.add("t", 1, **kw)
    with pytest.raises(jobkit.ConfigError, match=problem):
        await q.add_bulk("t", [1, 2], **kw)
    assert (await q.counts()).total == 0, "nothing was queued"
    with pytest.raises(jobkit.ConfigError, match="key=value"):
        await q.jobs(tag="doc")
