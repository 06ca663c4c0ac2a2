"""The cache warm job against a real Redis: fresh keys skipped, batches, key prefixes, patterns, retries, schedules."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs import CacheWarmReport
from tests.conftest import REDIS_TEST_URL, require_redis

CACHE_URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/14"  # the backend tests use /15
calls: list[str] = []
failing: set[str] = set()


@jobkit.jobs.register_cache_warmer(prefix="report:")
async def reports(key: str) -> dict[str, Any]:
    """A report's value: its name and a number, as an expensive query would produce."""
    calls.append(key)
    if key in failing:
        failing.discard(key)
        raise ConnectionError(f"the warehouse dropped the query for {key}")
    return {"report": key.removeprefix("report:"), "total": len(key)}


async def region_keys(pattern: str) -> list[str]:
    return [f"region:{name}" for name in ("north", "south", "east", "west")]


@jobkit.jobs.register_cache_warmer(prefix="region:", keys=region_keys)
async def regions(key: str) -> str:
    calls.append(key)
    return key.upper()


@pytest.fixture
async def cache() -> AsyncIterator[Any]:
    """The Redis database warmed values go to (emptied), registered as the cache "default"."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(CACHE_URL)
    try:
        await client.flushdb()
    except Exception as exc:  # noqa: BLE001 - any failure: no usable Redis
        await client.aclose()
        if require_redis():
            pytest.fail(f"JOBKIT_REQUIRE_REDIS=1 but Redis at {CACHE_URL} is unusable: {exc}")
        pytest.skip(f"Redis at {CACHE_URL} is not available: {exc}")
    jobkit.jobs.register_cache("default", CACHE_URL)
    calls.clear()
    failing.clear()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


async def warm(backend: Backend, **payload: Any) -> CacheWarmReport:
    report = await jobkit.run(jobkit.jobs.cache_warm, payload, backend=backend, timeout=60)
    assert isinstance(report, CacheWarmReport)
    return report


async def test_keys_are_computed_and_written_with_their_ttl(memory: Backend, cache: Any) -> None:
    report = await warm(memory, warmer="reports", keys=["report:b", "report:a", "report:a"], ttl=3600)
    assert (report.keys, report.written, report.fresh, report.batches) == (2, 2, 0, 1)
    assert calls == ["report:a", "report:b"]  # each key once, in order
    assert json.loads(await cache.get("report:a")) == {"report": "a", "total": 8}
    assert 3590_000 < await cache.pttl("report:b") <= 3600_000


async def test_fresh_keys_are_skipped_unless_forced_or_nearly_expired(memory: Backend, cache: Any) -> None:
    await warm(memory, warmer="reports", keys=["report:a", "report:b", "report:c"], ttl=3600)
    await cache.pexpire("report:c", 60_000)  # 1 minute left: less than half the ttl
    calls.clear()
    report = await warm(memory, warmer="reports", keys=["report:a", "report:b", "report:c"], ttl=3600)
    assert (report.written, report.fresh) == (1, 2) and calls == ["report:c"]
    calls.clear()
    forced = await warm(memory, warmer="reports", keys=["report:a", "report:b"], ttl=3600, force=True)
    assert (forced.written, forced.fresh) == (2, 0) and calls == ["report:a", "report:b"]
    calls.clear()
    strict = await warm(memory, warmer="reports", keys=["report:a"], ttl=3600, fresh_for=3600)
    assert strict.written == 1  # under 3600 s left counts as stale


async def test_patterns_from_the_warmers_own_keys_or_the_cache(memory: Backend, cache: Any) -> None:
    cold = await warm(memory, warmer="regions", patterns=["region:*th"], ttl=60)
    assert cold.written == 2 and sorted(calls) == ["region:north", "region:south"]
    await cache.set("report:old-1", "x", ex=5)  # 5 s left of a 60 s ttl: stale
    await cache.set("report:old-2", "x", ex=5)
    await cache.set("session:admin", "secret")
    existing = await warm(memory, warmer="reports", patterns=["report:old-*"], ttl=60)
    assert existing.written == 2 and await cache.get("session:admin") == b"secret"


async def test_a_payload_only_warms_keys_under_its_warmers_prefix(memory: Backend, cache: Any) -> None:
    await cache.set("session:admin", "secret")
    for field, value in (("keys", ["session:admin"]), ("patterns", ["*"])):
        with pytest.raises(jobkit.JobFailed) as info:
            await warm(memory, warmer="reports", ttl=60, **{field: value})
        assert "not under 'report:'" in (info.value.job.error or "") and info.value.job.attempts == 1
    assert await cache.get("session:admin") == b"secret" and calls == []
    for payload, expected in (({"warmer": "os:system"}, "cache warmer 'os:system' is not registered"),
                              ({"warmer": "reports", "cache": "elsewhere"}, "cache 'elsewhere' is not registered")):
        with pytest.raises(jobkit.JobFailed, match=expected):
            await warm(memory, keys=["report:a"], ttl=60, **payload)


async def test_batches_and_progress(memory: Backend, cache: Any, watch: Any) -> None:
    keys = [f"report:{i:02}" for i in range(10)]
    async with watch(memory, "default") as w:
        report = await warm(memory, warmer="reports", keys=keys, ttl=60, batch_size=3, concurrency=2)
        seen = await w.until(lambda e: e.progress is not None and e.progress.extra.get("batch") == 4)
    assert report.batches == 4 and report.written == 10
    assert seen[0].progress is not None and seen[0].progress.extra["keys_total"] == 10


async def test_skip_reports_keys_that_failed(memory: Backend, cache: Any) -> None:
    failing.add("report:b")
    report = await warm(memory, warmer="reports", keys=["report:a", "report:b", "report:c"], ttl=60, on_error="skip")
    assert (report.written, report.failed) == (2, 1)
    assert report.errors[0].key == "report:b" and "ConnectionError" in report.errors[0].error


async def test_a_retry_does_not_recompute_what_was_written(memory: Backend, cache: Any) -> None:
    failing.add("report:e")  # batch 2 of 3 fails once
    keys = [f"report:{c}" for c in "abcdefg"]
    handle = await jobkit.submit(jobkit.jobs.cache_warm, {"warmer": "reports", "keys": keys, "ttl": 60, "force": True,
                                                          "batch_size": 3}, backend=memory,
                                 backoff=jobkit.Backoff.fixed(0))
    report = await handle.result(timeout=60)
    assert report.attempts == 2 and report.written == 7
    # batch 1 once (checkpointed); in batch 2 "d" and "f" were written before the attempt failed, and are computed
    # again only because force=True; "e" failed, then succeeded
    assert calls == ["report:a", "report:b", "report:c", "report:d", "report:e", "report:f", "report:d", "report:e",
                     "report:f", "report:g"]


def test_defaults_follow_the_production_policy() -> None:
    task = jobkit.jobs.cache_warm
    assert task.name == "jobkit.jobs.cache_warm" and task.options.priority == 4 and task.options.attempts == 3
    assert [task.options.backoff.seconds(n) for n in (1, 2)] == [5.0, 15.0]
    p = jobkit.jobs.CacheWarm(warmer="w", keys=["k"], ttl=10)
    assert (p.cache, p.force, p.fresh_for, p.batch_size, p.on_error) == ("default", False, None, 100, "fail")


async def test_a_schedule_warms_the_cache_every_tick(memory: Backend, cache: Any) -> None:
    """The nightly precompute, at 1 s instead of cron="0 2 * * *": a worker serving the task fires it."""
    queue = jobkit.Queue("default", backend=memory)
    await queue.schedule("warm-regions", jobkit.jobs.cache_warm, {"warmer": "regions", "patterns": ["region:*"],
                                                                  "ttl": 3600}, every=1)
    worker = jobkit.Worker([jobkit.jobs.cache_warm], backend=memory)
    running = asyncio.create_task(worker.run())

    async def first_tick() -> jobkit.Job:
        while True:
            done = [j for j in await queue.jobs(state="completed") if j.id.startswith("warm-regions@")]
            if done:
                return done[0]
            await asyncio.sleep(0.05)

    try:
        job = await asyncio.wait_for(first_tick(), 15)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)
    assert job.result["written"] == 4 and job.options.priority == 4
    assert await cache.get("region:west") == b"REGION:WEST"


@pytest.mark.slow
async def test_a_transient_failure_is_retried_after_the_default_backoff(memory: Backend, cache: Any) -> None:
    """The production defaults as they are: the second attempt starts 5 s after the first failed."""
    failing.add("report:a")
    handle = await jobkit.submit(jobkit.jobs.cache_warm, {"warmer": "reports", "keys": ["report:a"], "ttl": 60},
                                 backend=memory)
    started = time.monotonic()
    report = await handle.result(timeout=40)
    job = await handle.job()
    assert report.attempts == 2 and report.written == 1 and job.state is jobkit.JobState.COMPLETED
    assert 5.0 <= time.monotonic() - started < 15.0
