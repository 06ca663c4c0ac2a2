"""Records: small versioned documents per queue (schedules stand on them), with compare-and-swap, on every backend."""

from __future__ import annotations

import asyncio

from jobkit.backends import Backend


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
