"""Adding jobs: idempotent by id, bulk in one call, validated before anything is stored."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel

import jobkit
from jobkit.backends import Backend
from jobkit.models import Job, JobState


class Item(BaseModel):
    n: int


@jobkit.task(queue="contract-add")
async def takes_item(ctx: jobkit.Context, item: Item) -> int:
    return item.n


@jobkit.task(queue="contract-add")
async def takes_nothing(ctx: jobkit.Context) -> None:
    return None


def job(queue: str, name: str = "t", **kw: object) -> Job:
    return Job(id=jobkit.models.new_job_id(), name=name, queue=queue, **kw)  # type: ignore[arg-type]


async def test_add_and_get(backend: Backend, qname: str) -> None:
    [stored] = await backend.add([job(qname, data={"a": [1, 2]})])
    assert stored.state is JobState.WAITING
    got = await backend.get(qname, stored.id)
    assert got is not None and got.data == {"a": [1, 2]} and got.name == "t"
    assert await backend.get(qname, "nope") is None


async def test_add_is_idempotent_by_job_id(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    first = await q.add("t", {"v": 1}, job_id="same")
    again = await q.add("t", {"v": 2}, job_id="same")
    assert again.id == first.id == "same"
    assert again.data == {"v": 1}, "a second add with the same id must not replace the job"
    assert (await q.counts()).waiting == 1


async def test_add_bulk_stores_all_in_order(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    jobs = await q.add_bulk("t", [{"i": i} for i in range(250)])
    assert [j.data["i"] for j in jobs] == list(range(250))
    assert len({j.id for j in jobs}) == 250
    assert (await q.counts()).waiting == 250


async def test_add_bulk_with_existing_ids_returns_stored(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    await q.add("t", {"old": True}, job_id="b")
    jobs = await q.add_bulk("t", [{"i": 0}, {"i": 1}], job_ids=["a", "b"])
    assert jobs[0].data == {"i": 0} and jobs[1].data == {"old": True}
    assert (await q.counts()).waiting == 2


async def test_invalid_payload_queues_nothing(backend: Backend) -> None:
    q = jobkit.Queue("contract-add", backend=backend)
    with pytest.raises(jobkit.PayloadError, match="takes_item"):
        await q.add(takes_item, {"n": "not a number"})
    with pytest.raises(jobkit.PayloadError, match="invalid payload 1 for task"):
        await q.add_bulk(takes_item, [{"n": 1}, {"n": "bad"}, {"n": 3}])
    with pytest.raises(jobkit.PayloadError, match="takes no payload, but payload 2 is one"):
        await q.add_bulk(takes_nothing, [None, None, {"n": 1}])
    with pytest.raises(jobkit.ConfigError, match="job ids are strings"):
        await q.add_bulk(takes_item, [{"n": 1}, {"n": 2}], job_ids=["a", 7])  # type: ignore[list-item]
    assert (await q.counts()).total == 0


async def test_add_bulk_returns_each_job_as_stored(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    for delay, state in ((None, JobState.WAITING), (60.0, JobState.DELAYED)):
        added = await q.add_bulk(takes_item, [{"n": i} for i in range(100)], delay=delay, priority=2)
        for job in added:
            stored = await backend.get(qname, job.id)
            assert stored is not None
            assert job.model_dump() == stored.model_dump(), "add must answer with the job as the backend keeps it"
            assert job.state is state and job.options.priority == 2 and job.history[-1].note == "added"
        assert [j.seq for j in added] == sorted(j.seq for j in added)


async def test_payload_must_be_json(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    with pytest.raises(jobkit.PayloadError, match="JSON"):
        await q.add("t", {"when": object()})
    with pytest.raises(jobkit.PayloadError, match="JSON"):
        await q.add("t", {"x": float("nan")})
    assert (await q.counts()).total == 0


async def test_options_out_of_range(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    with pytest.raises(jobkit.ConfigError, match="delay"):
        await q.add("t", None, delay=-1)
    with pytest.raises(jobkit.ConfigError, match="attempts"):
        await q.add("t", None, attempts=0)
    assert (await q.counts()).total == 0


async def test_delay_makes_job_delayed(backend: Backend, qname: str) -> None:
    q = jobkit.Queue(qname, backend=backend)
    j = await q.add("t", None, delay=60)
    assert j.state is JobState.DELAYED and j.run_at > time.time() + 50
    c = await q.counts()
    assert c.delayed == 1 and c.waiting == 0


async def test_one_add_of_unlike_jobs_stores_each_as_given(backend: Backend, qname: str) -> None:
    now = time.time()
    urgent = jobkit.models.JobOptions(priority=1, attempts=4)
    given = [
        job(qname, "a", data=1, options=urgent, created_at=now, run_at=now),
        job(qname, "a", data=2, options=urgent, created_at=now, run_at=now),
        job(qname, "b", data=3, options=urgent, created_at=now, run_at=now + 60),
        job(qname, "b", data=4, created_at=now, run_at=now + 60),
        job(qname, "b", data=5, created_at=now, run_at=now + 60, attempts=2),
        job(qname, "b", data=6, created_at=now + 1, run_at=now + 60),
    ]
    added = await backend.add(given)
    for job_in, out in zip(given, added, strict=True):
        stored = await backend.get(qname, job_in.id)
        assert stored is not None and out.model_dump() == stored.model_dump()
        assert (stored.name, stored.data, stored.options, stored.run_at, stored.created_at, stored.attempts) == (
            job_in.name, job_in.data, job_in.options, job_in.run_at, job_in.created_at, job_in.attempts)
        assert stored.state is (JobState.DELAYED if job_in.run_at > now else JobState.WAITING)
        assert stored.history[-1].attempt == job_in.attempts
