"""Records: small versioned documents per queue (schedules stand on them), with compare-and-swap, on every backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobkit.backends import Backend
from jobkit.models import Job, JobOptions, JobState, new_job


async def test_write_read_list_and_delete(backend: Backend, qname: str) -> None:
    assert await backend.read_record(qname, "schedule", "a") is None
    assert await backend.list_records(qname, "schedule") == []
    assert await backend.write_record(qname, "schedule", "b", '{"n":1}') == 1
    assert await backend.write_record(qname, "schedule", "a", '{"n":"x:y"}') == 1
    assert await backend.write_record(qname, "schedule", "a", '{"n":2}') == 2
    record = await backend.read_record(qname, "schedule", "a")
    assert record is not None and (record.key, record.value, record.version) == ("a", '{"n":2}', 2)
    assert [(r.key, r.version) for r in await backend.list_records(qname, "schedule")] == [("a", 2), ("b", 1)]
    assert await backend.list_records(qname, "other") == []
    assert await backend.list_records("elsewhere", "schedule") == []
    assert await backend.write_record(qname, "schedule", "a", None) == 0
    assert await backend.read_record(qname, "schedule", "a") is None


async def test_record_queues_are_those_holding_records_of_a_kind(backend: Backend, qname: str) -> None:
    other = qname + "-b"
    assert await backend.record_queues("schedule") == []
    await backend.write_record(other, "schedule", "a", "1")
    await backend.write_record(qname, "schedule", "a", "1", version=0, add=[_tick(qname, "s@1")])
    await backend.write_record(qname, "other-kind", "a", "1")
    assert await backend.record_queues("schedule") == sorted([qname, other])
    await backend.write_record(other, "schedule", "a", None)
    assert await backend.record_queues("schedule") == [qname]
    assert await backend.record_queues("other-kind") == [qname]


async def test_compare_and_swap(backend: Backend, qname: str) -> None:
    assert await backend.write_record(qname, "k", "x", "1", version=1) is None  # nothing there yet
    assert await backend.write_record(qname, "k", "x", "1", version=0) == 1
    assert await backend.write_record(qname, "k", "x", "again", version=0) is None  # created already
    assert await backend.write_record(qname, "k", "x", "2", version=1) == 2
    assert await backend.write_record(qname, "k", "x", None, version=1) is None  # stale delete refused
    record = await backend.read_record(qname, "k", "x")
    assert record is not None and record.value == "2"


async def test_concurrent_swaps_one_wins_each_round(backend: Backend, qname: str) -> None:
    """Ten writers race from the same version: exactly one succeeds, the rest see it did not match."""
    await backend.write_record(qname, "k", "tick", "0")
    for round_ in range(1, 4):
        results = await asyncio.gather(*(backend.write_record(qname, "k", "tick", f"{round_}-{i}", version=round_)
                                         for i in range(10)))
        assert [r for r in results if r is not None] == [round_ + 1], results


def _tick(qname: str, job_id: str) -> Job:
    now = time.time()
    return new_job(job_id, "s.tick", qname, {"n": 1}, JobOptions(), now, now)


async def test_write_with_jobs_adds_them_in_the_same_step(backend: Backend, qname: str) -> None:
    assert await backend.write_record(qname, "schedule", "s", "v1", version=0, add=[_tick(qname, "s@1")]) == 1
    job = await backend.get(qname, "s@1")
    assert job is not None and job.state == JobState.WAITING and job.data == {"n": 1}
    assert (await backend.counts(qname)).waiting == 1


async def test_a_stale_version_writes_nothing_and_adds_nothing(backend: Backend, qname: str) -> None:
    await backend.write_record(qname, "schedule", "s", "v1")
    assert await backend.write_record(qname, "schedule", "s", "v2", version=0, add=[_tick(qname, "s@1")]) is None
    assert await backend.get(qname, "s@1") is None and (await backend.counts(qname)).waiting == 0
    record = await backend.read_record(qname, "schedule", "s")
    assert record is not None and (record.value, record.version) == ("v1", 1)


async def test_a_job_id_already_there_is_left_as_it_is(backend: Backend, qname: str) -> None:
    [first] = await backend.add([_tick(qname, "s@1")])
    again = _tick(qname, "s@1").model_copy(update={"data": {"n": 2}})
    assert await backend.write_record(qname, "schedule", "s", "v1", version=0, add=[again]) == 1
    stored = await backend.get(qname, "s@1")
    assert stored is not None and stored.data == {"n": 1} and stored.seq == first.seq
    assert (await backend.counts(qname)).waiting == 1


async def test_racing_writers_with_jobs_add_one_job_per_round(backend: Backend, qname: str) -> None:
    """Ten writers race from the same version, each adding its own job: one write wins, with only its job."""
    await backend.write_record(qname, "schedule", "s", "0")
    for round_ in range(1, 4):
        results = await asyncio.gather(*(
            backend.write_record(qname, "schedule", "s", f"{round_}-{i}", version=round_,
                                 add=[_tick(qname, f"s@{round_}-{i}")]) for i in range(10)))
        assert [r for r in results if r is not None] == [round_ + 1], results
        record = await backend.read_record(qname, "schedule", "s")
        assert record is not None
        assert await backend.get(qname, f"s@{record.value}") is not None, "the winner's job is there"
    assert len(await backend.list(qname)) == 3, "and no loser's"


async def test_jobs_need_a_version_and_their_own_queue(backend: Backend, qname: str) -> None:
    with pytest.raises(ValueError, match="own queue"):
        await backend.write_record(qname, "schedule", "s", "v", add=[_tick(qname, "s@1")])
    with pytest.raises(ValueError, match="own queue"):
        await backend.write_record(qname, "schedule", "s", "v", version=0, add=[_tick("elsewhere", "s@1")])
    assert await backend.read_record(qname, "schedule", "s") is None


async def test_many_jobs_in_one_write(backend: Backend, qname: str) -> None:
    """A catch-up of a thousand ticks is one write too (no argument-count limit in the Redis script)."""
    jobs = [_tick(qname, f"s@{i}") for i in range(1000)]
    assert await backend.write_record(qname, "schedule", "s", "v", version=0, add=jobs) == 1
    assert (await backend.counts(qname)).waiting == 1000
