"""Redis-only behaviour: cluster-safe key layout, script reloads, stream trimming, cross-instance wake-ups,
URL handling and out-of-memory refusals. The contract suite covers the semantics shared with other backends."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from private_redis import RedisServer, free_port

import jobkit
from jobkit.backends import Offer, from_url
from jobkit.backends.redis import RedisBackend, _library
from jobkit.errors import BackendError, ConfigError
from jobkit.models import Job, JobEvent, JobOptions, JobState, Outcome, Progress, RateLimit, Retention, WorkerInfo
from tests.conftest import redis_backend

REDIS_URL = os.environ.get("JOBKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PASSWORD = "s3cret-pw"


def job(queue: str, name: str = "t", **kw: object) -> Job:
    return Job(id=uuid.uuid4().hex, name=name, queue=queue, **kw)  # type: ignore[arg-type]


async def _raw(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True)


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    client = await _raw(REDIS_URL)
    try:
        await client.ping()  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - any failure means no test Redis
        await client.aclose()
        pytest.skip(f"Redis at {REDIS_URL} is not available: {exc}")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def backend(raw: aioredis.Redis) -> AsyncIterator[RedisBackend]:
    b = redis_backend(REDIS_URL)
    assert isinstance(b, RedisBackend)
    await b.open()
    yield b
    await b.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server of our own (password set, nothing persisted), so tests may change its config."""
    with RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD,
                     args=("--maxmemory-policy", "noeviction")) as server:
        yield server.port


def _queue_keys(keys: list[str], queue: str) -> list[str]:
    return [k for k in keys if not k.startswith(("jobkit:queues", "jobkit:{workers}"))]


async def test_every_queue_key_shares_the_queue_hash_slot(backend: RedisBackend, raw: aioredis.Redis) -> None:
    q = "q"
    a, b, c, d = await backend.add([job(q, owner="u-1", tags={"doc": "d-1"}), job(q), job(q),
                                    job(q, run_at=time.time() + 60)])
    claimed = await backend.claim(q, "w1", limit=3, lease=30, now=time.time(), rate_limit=RateLimit(10, per=1))
    assert [j.id for j in claimed.jobs] == [a.id, b.id, c.id]
    await backend.set_progress(q, "w1", a.id, Progress(percent=50))
    await backend.set_checkpoint(q, "w1", a.id, {"at": 1})
    await backend.finish(q, "w1", [
        Outcome(job_id=a.id, state=JobState.COMPLETED, result=1, expires_at=time.time() + 60),
        Outcome(job_id=b.id, state=JobState.FAILED, error="boom", expires_at=time.time() + 60),
    ], time.time())
    await backend.cancel(q, d.id, time.time())
    await backend.set_paused(q, True)
    await backend.set_paused(q, False)
    await backend.heartbeat(WorkerInfo(id="w1", queues=[q]), ttl=10)
    events = await backend.subscribe(q, since="0")
    assert (await asyncio.wait_for(events.__anext__(), 5)).event == "added"
    await events.aclose()  # type: ignore[attr-defined]

    keys = [k async for k in raw.scan_iter("*")]
    mine = _queue_keys(keys, q)
    assert len(mine) > 10
    for key in mine:
        # Redis Cluster hashes only the part between the first "{" and the next "}".
        assert key.startswith("jobkit:{q}:"), key
    assert set(keys) - set(mine) <= {"jobkit:queues", "jobkit:{workers}:info", "jobkit:{workers}:seen"}


async def _script_calls(raw: aioredis.Redis) -> dict[str, int]:
    stats = await raw.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "fcall")}


async def _add_claim_count_get(b: RedisBackend) -> None:
    """One pass through the pipelined add, a claim, a read-only script and a read."""
    [added] = await b.add([job("q")])
    claimed = await b.claim("q", "w1", limit=5, lease=30, now=time.time())
    assert added.id in [j.id for j in claimed.jobs]
    assert (await b.counts("q")).active >= 1
    assert await b.queues() == ["q"]
    assert (await b.get("q", added.id)) is not None


@pytest.mark.parametrize("functions", [False, None])
async def test_scripts_are_reloaded_after_a_flush(raw: aioredis.Redis, functions: bool | None) -> None:
    """EVALSHA after SCRIPT FLUSH, and FCALL after FUNCTION FLUSH (or a restart of a Redis that keeps nothing on
    disk), load what is gone and run the command again."""
    b = RedisBackend(REDIS_URL, functions=functions)
    await b.open()
    try:
        await b.add([job("q")])
        for _ in range(3):
            await (raw.script_flush() if functions is False else raw.function_flush())
            await _add_claim_count_get(b)
        assert (await b.counts("q")).active == 4
    finally:
        await b.close()


async def test_scripts_run_as_functions_where_redis_has_them(raw: aioredis.Redis) -> None:
    """On Redis 7+ every script is a function of one library (no per-call preamble); functions=False keeps
    EVALSHA; both leave the same data."""
    version = tuple(int(p) for p in (await raw.info("server"))["redis_version"].split(".")[:2])
    if version < (7, 0):
        pytest.skip("Redis 7+ has functions")
    for functions, used, unused in ((None, "fcall", "evalsha"), (False, "evalsha", "fcall")):
        b = RedisBackend(REDIS_URL, functions=functions)
        await b.open()
        try:
            before = await _script_calls(raw)
            await _add_claim_count_get(b)
            after = await _script_calls(raw)
            assert after[used] - before[used] >= 3
            assert after[unused] == before[unused]
        finally:
            await b.close()
    libraries = [dict(zip(lib[::2], lib[1::2], strict=True))["library_name"] for lib in await raw.function_list()]
    assert _library()[0] in libraries


async def test_a_server_that_refuses_functions_falls_back_to_evalsha(private_redis: int) -> None:
    """An ACL without FUNCTION: the default falls back to EVALSHA; functions=True refuses to open, saying why."""
    admin = await _raw(f"redis://:{PASSWORD}@127.0.0.1:{private_redis}/0")
    await admin.acl_setuser("nofn", enabled=True, passwords=["+nofn-pw"], keys=["*"], channels=["*"],
                            commands=["+@all", "-function"])
    url = f"redis://nofn:nofn-pw@127.0.0.1:{private_redis}/0"
    try:
        await admin.flushall()
        await admin.function_flush()
        before = await _script_calls(admin)
        b = RedisBackend(url)
        await b.open()
        try:
            await _add_claim_count_get(b)
        finally:
            await b.close()
        after = await _script_calls(admin)
        assert after["evalsha"] - before["evalsha"] >= 3 and after["fcall"] == before["fcall"]
        with pytest.raises(ConfigError, match="refused jobkit's function library"):
            await RedisBackend(url, functions=True).open()
    finally:
        await admin.acl_deluser("nofn")
        await admin.flushall()
        await admin.aclose()


async def test_event_stream_is_trimmed(backend: RedisBackend, raw: aioredis.Redis) -> None:
    for _ in range(3):
        await backend.add([job("q") for _ in range(8_000)])
    await backend.add([job("q")])
    length = await raw.xlen("jobkit:{q}:events")
    assert 10_000 <= length <= 11_500, length


async def test_wait_for_work_wakes_on_add_from_another_instance(backend: RedisBackend) -> None:
    other = from_url(REDIS_URL)
    await other.open()
    try:
        await backend.wait_for_work("q", 0)  # the first call starts watching and returns at once
        started = time.monotonic()
        await backend.wait_for_work("q", 0.3)
        assert time.monotonic() - started >= 0.25, "with nothing added it waits for the timeout"

        waiter = asyncio.ensure_future(backend.wait_for_work("q", 10))
        await asyncio.sleep(0)
        added = time.monotonic()
        await other.add([job("q")])
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - added < 0.5

        # retry, resume and recover by another instance wake it too
        claimed = await other.claim("q", "w2", limit=1, lease=0.01, now=time.time())
        await other.finish("q", "w2", [Outcome(job_id=claimed.jobs[0].id, state=JobState.FAILED, error="x")],
                           time.time())
        for action in ("retry", "pause-resume"):
            waiter = asyncio.ensure_future(backend.wait_for_work("q", 10))
            await asyncio.sleep(0)
            added = time.monotonic()
            if action == "retry":
                assert await other.retry("q", None, time.time()) == 1
            else:
                await other.set_paused("q", True)
                await other.set_paused("q", False)
            await asyncio.wait_for(waiter, 5)
            assert time.monotonic() - added < 0.5, action
    finally:
        await other.close()


async def test_on_work_settles_a_future_without_a_task(backend: RedisBackend) -> None:
    """on_work: None until the wake stream is read (wait_for_work starts it); then the given future is settled by a
    wake from another instance, or after the timeout; the returned call withdraws the wait and its offer."""
    other = from_url(REDIS_URL)
    await other.open()
    loop = asyncio.get_running_loop()
    try:
        assert backend.on_work("q", 10, loop.create_future()) is None
        await backend.wait_for_work("q", 0)  # starts watching
        woken: asyncio.Future[None] = loop.create_future()
        stop = backend.on_work("q", 10, woken)
        assert stop is not None and not woken.done()
        await other.add([job("q")])
        await asyncio.wait_for(woken, 5)
        stop()

        woken = loop.create_future()
        stop = backend.on_work("q", 0.2, woken, Offer("w1", limit=1, lease=30))
        assert stop is not None and backend._offers["q"]
        started = time.monotonic()
        await asyncio.wait_for(woken, 5)
        assert time.monotonic() - started >= 0.15, "with nothing added it waits for the timeout"
        stop()
        assert not backend._offers["q"]  # withdrawn: a later add claims for nobody
    finally:
        await other.close()


async def test_own_writes_wake_without_a_round_trip(backend: RedisBackend) -> None:
    await backend.wait_for_work("q", 0)
    waiter = asyncio.ensure_future(backend.wait_for_work("q", 10))
    await asyncio.sleep(0)
    await backend.add([job("q")])
    await asyncio.wait_for(waiter, 5)
    # the feed later reads that same "added" event: it must not wake the next wait again
    started = time.monotonic()
    await backend.wait_for_work("q", 0.3)
    assert time.monotonic() - started >= 0.25


class _CountingSends:
    """Counts the request/response round trips a backend makes (the event feed's XREAD is not one)."""

    def __init__(self, backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        send = backend._send

        async def counted(*args: object, **kw: object) -> list[object]:
            self.n += 1
            return await send(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(backend, "_send", counted)


async def _finish(backend: RedisBackend, queue: str, result: object) -> Job:
    [claimed] = (await backend.claim(queue, "w", limit=1, lease=30, now=time.time())).jobs
    now = time.time()
    await backend.finish(queue, "w", [Outcome(job_id=claimed.id, state=JobState.COMPLETED, result=result,
                                              run_at=now)], now)
    return claimed


async def _end_of(events: AsyncIterator[JobEvent], job_id: str) -> JobEvent:
    """The first event of `job_id` that says it ended (bounded by the caller)."""
    async for ev in events:
        if ev.job_id == job_id and ev.state.finished:
            return ev
    raise AssertionError("the watch ended before the job did")


async def test_watching_a_job_it_added_needs_no_round_trip(
    backend: RedisBackend, raw: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job added alone (submit, run) is added with this instance's inbox registered: the watch sends nothing,
    and the job's end, with its small result, arrives through the inbox, not the event stream."""
    [added] = await backend.add([job("q")])
    sends = _CountingSends(backend, monkeypatch)
    events, seen = await backend.watch("q", added.id, added)
    try:
        assert seen is added and sends.n == 0
        assert not backend._feeds  # no subscription to the queue's event stream
        monkeypatch.undo()
        await _finish(backend, "q", 42)
        ev = await asyncio.wait_for(_end_of(events, added.id), 5)
        assert (ev.event, ev.state, ev.carried_result) == ("completed", JobState.COMPLETED, (42,))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    # Only the first watch of a job skips the read: later ones read it, and an ended job is answered at once.
    again, job_now = await backend.watch("q", added.id, added)
    await again.aclose()  # type: ignore[attr-defined]
    assert job_now is not None and job_now.state is JobState.COMPLETED and job_now.result == 42
    inbox = f"jobkit:{{q}}:done:{backend._token}"
    assert await raw.llen(inbox) == 0  # read, not left behind


async def test_a_waiter_in_another_process_hears_the_end_of_a_job_it_did_not_add(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    """The watch registers its inbox on the job (one round trip); an end by cancel or a failure arrives too,
    without its result: the waiter reads the job then."""
    other = from_url(REDIS_URL)
    await other.open()
    try:
        first, second = await other.add([job("q"), job("q")])
        watches = [await backend.watch("q", j.id, j) for j in (first, second)]
        assert [seen.state if seen else None for _, seen in watches] == [JobState.WAITING, JobState.WAITING]
        await other.cancel("q", first.id, time.time())
        [c] = (await other.claim("q", "w2", limit=1, lease=30, now=time.time())).jobs
        assert c.id == second.id
        now = time.time()
        await other.finish("q", "w2", [Outcome(job_id=c.id, state=JobState.FAILED, error="boom", run_at=now)], now)
        ends = [await asyncio.wait_for(_end_of(events, j.id), 5)
                for (events, _), j in zip(watches, (first, second), strict=True)]
        assert [(e.event, e.state, e.carried_result) for e in ends] == [
            ("cancelled", JobState.CANCELLED, None), ("failed", JobState.FAILED, None)]
        for events, _ in watches:
            await events.aclose()  # type: ignore[attr-defined]
        # A second waiter on the same job registers beside the first; an ended job needs no inbox.
        [third] = await other.add([job("q")])
        w1, _ = await backend.watch("q", third.id)
        w2, _ = await other.watch("q", third.id)
        assert sorted((await raw.hget(f"jobkit:{{q}}:j:{third.id}", "wt")).split()) == sorted(
            [backend._token, other._token])
        await _finish(other, "q", "both")
        for events in (w1, w2):
            assert (await asyncio.wait_for(_end_of(events, third.id), 5)).carried_result == ("both",)
            await events.aclose()  # type: ignore[attr-defined]
    finally:
        await other.close()


async def test_an_end_that_comes_before_the_watch_is_kept_for_it(backend: RedisBackend) -> None:
    """A job added here (its adder's inbox registered) and ended by a worker in another process may end before its
    handle here watches it, while the inbox is read for other waiters: the early end waits for that watch."""
    other = from_url(REDIS_URL)
    await other.open()
    try:
        [keeps_reading] = await backend.add([job("q", run_at=time.time() + 3600)])  # never claimed here
        reading, _ = await backend.watch("q", keeps_reading.id, keeps_reading)
        [early] = await backend.add([job("q")])
        await _finish(other, "q", "early")
        inbox = backend._inboxes["q"]
        deadline = time.monotonic() + 5
        while early.id not in inbox.unclaimed:  # the inbox keeps no condition to wait on
            assert time.monotonic() < deadline, "the end never reached the inbox"
            await asyncio.sleep(0.01)
        events, seen = await backend.watch("q", early.id, early)
        assert seen is early  # no read: the end itself is what the handle waits for
        ev = await asyncio.wait_for(_end_of(events, early.id), 1)  # not the handle's 2 s re-read
        assert ev.carried_result == ("early",) and early.id not in inbox.unclaimed
        await events.aclose()  # type: ignore[attr-defined]
        await reading.aclose()  # type: ignore[attr-defined]
    finally:
        await other.close()


async def test_an_inbox_nobody_reads_is_bounded_and_expires(backend: RedisBackend, raw: aioredis.Redis) -> None:
    """Jobs added alone register their adder's inbox whether or not anyone waits: an unread inbox keeps the
    newest 1,000 ends (pushed by a worker of another instance) and expires a minute after the last push."""
    jobs = [(await backend.add([job("q")]))[0] for _ in range(1003)]
    other = from_url(REDIS_URL)
    await other.open()
    try:
        for j in jobs:
            await _finish(other, "q", j.id)  # type: ignore[arg-type]
    finally:
        await other.close()
    inbox = f"jobkit:{{q}}:done:{backend._token}"
    assert await raw.llen(inbox) == 1000
    assert (await raw.lindex(inbox, 0)).split("\0")[1] == jobs[-1].id  # the newest first
    assert 0 < await raw.pttl(inbox) <= 60_000


@pytest.mark.parametrize("kept", [1000, 2])
async def test_a_subscription_from_a_recent_id_replays_the_kept_events(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """A subscription starting a little in the past gets the feed's kept entries; once they no longer reach back
    that far, XRANGE reads them."""
    monkeypatch.setattr("jobkit.backends._redis_readers.RECENT_EVENTS", kept)
    live = await backend.subscribe("q")  # a live feed, as with a progress bar in this process
    [added] = await backend.add([job("q")])
    since = (await asyncio.wait_for(live.__anext__(), 5)).id
    await _finish(backend, "q", 42)
    for _ in range(3):  # events of other jobs, read by the feed before the replay starts
        await backend.add([job("q")])
    feed = backend._feeds["q"]
    deadline = time.monotonic() + 5  # until the feed has read them all (it keeps no condition to wait on)
    while (not feed.recent or feed.recent[-1][0] < await _last_event_id(backend, "q")) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert feed.recent and feed.recent[-1][0] == await _last_event_id(backend, "q")
    sends = _CountingSends(backend, monkeypatch)
    replay = await backend.subscribe("q", since=since)
    kinds = []
    for _ in range(5):
        ev = await asyncio.wait_for(replay.__anext__(), 5)
        kinds.append((ev.job_id == added.id, ev.event))
    assert kinds == [(True, "active"), (True, "completed"), (False, "added"), (False, "added"), (False, "added")]
    assert sends.n == (1 if kept == 1000 else 2)  # the stream's last id; then XRANGE when the kept entries fell short
    await replay.aclose()  # type: ignore[attr-defined]
    await live.aclose()  # type: ignore[attr-defined]


async def _last_event_id(backend: RedisBackend, queue: str) -> tuple[int, int]:
    from jobkit.backends._redis_readers import event_id

    return event_id(await backend._last_event(queue))


async def test_a_result_from_another_process_still_needs_a_read(backend: RedisBackend, raw: aioredis.Redis) -> None:
    other = from_url(REDIS_URL)
    await other.open()
    try:
        [added] = await other.add([job("q")])
        await _finish(other, "q", "done")
        events, seen = await backend.watch("q", added.id, added)  # not added here: the job is read
        await events.aclose()  # type: ignore[attr-defined]
        assert seen is not None and seen.state is JobState.COMPLETED and seen.result == "done"
    finally:
        await other.close()


async def test_subscription_is_live_when_returned_and_ends_on_close(raw: aioredis.Redis) -> None:
    b = from_url(REDIS_URL)
    await b.open()
    await b.add([job("q")])
    events = await b.subscribe("q")
    [new] = await b.add([job("q")])
    ev = await asyncio.wait_for(events.__anext__(), 5)
    assert (ev.job_id, ev.event, ev.state) == (new.id, "added", JobState.WAITING)
    assert ev.id and "-" in ev.id  # the stream entry id
    replay = await b.subscribe("q", since="0")
    assert (await asyncio.wait_for(replay.__anext__(), 5)).job_id != new.id
    await b.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(events.__anext__(), 5)


async def test_clean_deletes_the_job_data(backend: RedisBackend, raw: aioredis.Redis) -> None:
    [a] = await backend.add([job("q", owner="u-1", tags={"doc": "d-1", "k": "v"})])
    assert {k async for k in raw.scan_iter("*:owner:*")} == {"jobkit:{q}:meta:owner:u-1"}
    assert len({k async for k in raw.scan_iter("*:tag:*")}) == 2
    await backend.claim("q", "w", limit=1, lease=30, now=time.time())
    await backend.finish("q", "w", [Outcome(job_id=a.id, state=JobState.COMPLETED)], time.time())
    assert await backend.clean("q", JobState.COMPLETED, finished_before=time.time() + 1) == 1
    keys = [k async for k in raw.scan_iter("*")]
    assert not [k for k in keys if a.id in k or ":owner:" in k or ":tag:" in k], "the owner and tag indexes too"
    for key in keys:
        if await raw.type(key) == "zset":
            assert not [m for m in await raw.zrange(key, 0, -1) if a.id in m], key
    assert await backend.get("q", a.id) is None


def test_url_parsing_and_masking() -> None:
    b = RedisBackend("redis://alice:p%40ss@127.0.0.1:6390/7?socket_timeout=2.5&socket_keepalive=true")
    kw = b._kwargs
    assert (kw["host"], kw["port"], kw["db"], kw["username"], kw["password"]) == ("127.0.0.1", 6390, 7, "alice", "p@ss")
    assert kw["socket_timeout"] == 2.5 and kw["socket_keepalive"] is True
    assert "p%40ss" not in repr(b) and "***" in repr(b)
    assert "SSL" in RedisBackend("rediss://h:6380/0")._kwargs["connection_class"].__name__
    with pytest.raises(ConfigError, match="database number"):
        RedisBackend("redis://h:6379/notadb")
    with pytest.raises(ConfigError, match="unknown option"):
        RedisBackend("redis://h:6379/0?no_such_option=1")
    with pytest.raises(ConfigError, match="socket_timeout"):
        RedisBackend("redis://h:6379/0?socket_timeout=soon")


def test_cluster_url_parsing() -> None:
    b = RedisBackend("redis+cluster://bob:s3cret@10.0.0.1:7000,[::1]:7001,node3?socket_timeout=2")
    assert b._seeds == [("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379)]
    assert (b._kwargs["username"], b._kwargs["password"], b._kwargs["socket_timeout"]) == ("bob", "s3cret", 2.0)
    assert "s3cret" not in repr(b)
    assert "SSL" in RedisBackend("rediss+cluster://h:7000")._kwargs["connection_class"].__name__
    with pytest.raises(ConfigError, match="only database 0"):
        RedisBackend("redis+cluster://h:7000/3")
    with pytest.raises(ConfigError, match="host:port"):
        RedisBackend("redis+cluster://h:7000,h:port")
    with pytest.raises(ConfigError, match="no host"):
        RedisBackend("redis+cluster://")


async def test_unreachable_redis_is_a_config_error_with_the_password_masked() -> None:
    b = from_url(f"redis://bob:hunter2@127.0.0.1:{free_port()}/0?socket_connect_timeout=2")
    with pytest.raises(ConfigError) as info:
        await b.open()
    message = str(info.value)
    assert "hunter2" not in message and "bob:***@127.0.0.1" in message and "does not answer" in message
    with pytest.raises(BackendError, match="not open"):
        await b.counts("q")


async def test_password_and_db_from_the_url(private_redis: int) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{private_redis}/3"
    b = from_url(url)
    await b.open()
    try:
        await b.add([job("q")])
        raw = await _raw(url)
        assert await raw.zcard("jobkit:{q}:waiting") == 1
        other_db = await _raw(f"redis://:{PASSWORD}@127.0.0.1:{private_redis}/0")
        assert await other_db.dbsize() == 0
        await other_db.aclose()
        await raw.flushall()
        await raw.aclose()
    finally:
        await b.close()
    with pytest.raises(ConfigError, match="credentials") as info:
        await from_url(f"redis://:wrong@127.0.0.1:{private_redis}/3").open()
    assert "wrong" not in str(info.value)


async def test_out_of_memory_is_a_backend_error_and_writes_nothing(private_redis: int) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{private_redis}/0"
    raw = await _raw(url)
    b = from_url(url)
    await b.open()
    try:
        await raw.flushall()
        [held] = await b.add([job("q")])
        await b.claim("q", "w", limit=1, lease=30, now=time.time())
        before = await b.counts("q")
        keys_before = sorted([k async for k in raw.scan_iter("*")])
        events_before = await raw.xlen("jobkit:{q}:events")
        used = int((await raw.info("memory"))["used_memory"])
        await raw.config_set("maxmemory", str(max(1, used - 4096)))

        with pytest.raises(BackendError, match="out of memory"):
            await b.add([job("q")])
        with pytest.raises(BackendError, match="out of memory"):
            await jobkit.Queue("q", backend=b).add_bulk("t", [{"i": i} for i in range(50)])
        with pytest.raises(BackendError, match="out of memory"):
            await b.set_progress("q", "w", held.id, Progress(percent=10))

        await raw.config_set("maxmemory", "0")
        assert await b.counts("q") == before
        assert sorted([k async for k in raw.scan_iter("*")]) == keys_before
        assert await raw.xlen("jobkit:{q}:events") == events_before
        assert (await b.get("q", held.id)).progress.percent == 0  # type: ignore[union-attr]
        await b.add([job("q")])
        assert (await b.counts("q")).waiting == 1
    finally:
        await raw.config_set("maxmemory", "0")
        await raw.flushall()
        await raw.aclose()
        await b.close()


async def test_two_instances_never_claim_the_same_job(backend: RedisBackend) -> None:
    other = from_url(REDIS_URL)
    await other.open()
    try:
        await backend.add([job("q") for _ in range(300)])

        async def drain(b: jobkit.Backend, worker: str) -> list[str]:
            got: list[str] = []
            while True:
                claimed = await b.claim("q", worker, limit=7, lease=30, now=time.time())
                if not claimed.jobs:
                    return got
                got += [j.id for j in claimed.jobs]

        a, b = await asyncio.gather(drain(backend, "wa"), drain(other, "wb"))
        assert len(a) + len(b) == 300 and not set(a) & set(b)
    finally:
        await other.close()


def _norm(x: object) -> object:
    if isinstance(x, list):
        return [_norm(i) for i in x]
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    if hasattr(x, "jobs") and hasattr(x, "retry_in"):
        return {"jobs": _norm(x.jobs), "retry_in": None if x.retry_in is None else round(x.retry_in, 3), "dry": x.dry}
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    return x


def _new_jobs(rnd: random.Random, step: int, now: float, ids: list[str]) -> list[Job]:
    jobs = []
    for i in range(rnd.randint(1, 4)):
        jid = rnd.choice(ids) if ids and rnd.random() < 0.15 else f"j{step}-{i}"
        opts = JobOptions(priority=rnd.choice([1, 3, 3, 4]), attempts=rnd.randint(1, 3),
                          max_stalls=rnd.choice([0, 1, 2]), keep_failed=rnd.choice([Retention(age=100), Retention()]))
        jobs.append(Job(id=jid, name=rnd.choice(["a", "b"]), queue="q", data={"n": step}, options=opts,
                        created_at=now, run_at=now + rnd.choice([0, 0, 0, 2.0])))
    return jobs


def _outcomes(rnd: random.Random, step: int, now: float, ids: list[str]) -> list[Outcome]:
    outcomes = []
    for jid in rnd.sample(ids, min(len(ids), rnd.randint(1, 3))):
        st = rnd.choice([JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.WAITING, JobState.DELAYED])
        done = st is JobState.COMPLETED
        outcomes.append(Outcome(job_id=jid, state=st, result={"r": step} if done else None,
                                error=None if done else f"err {step}", traceback=None if done else "tb",
                                run_at=now + rnd.choice([0.0, 1.5]), expires_at=rnd.choice([None, now + 10])))
    return outcomes


_Step = Callable[[random.Random, jobkit.Backend, int, float, list[str]], Awaitable[object]]
_STEPS: dict[str, _Step] = {
    "add": lambda r, b, step, now, ids: b.add(_new_jobs(r, step, now, ids)),
    "claim": lambda r, b, step, now, ids: b.claim(
        "q", r.choice(["w1", "w2"]), limit=r.randint(0, 4), lease=r.choice([1.0, 5.0]), now=now,
        names=r.choice([None, None, ["a"], []]), rate_limit=r.choice([None, None, RateLimit(3, per=2.0)])),
    "finish": lambda r, b, step, now, ids: b.finish("q", r.choice(["w1", "w2"]), _outcomes(r, step, now, ids), now),
    "finish_claim": lambda r, b, step, now, ids: b.finish_and_claim(
        "q", r.choice(["w1", "w2"]), _outcomes(r, step, now, ids), limit=r.randint(0, 4), lease=r.choice([1.0, 5.0]),
        now=now, names=r.choice([None, None, ["a"], []]), rate_limit=r.choice([None, None, RateLimit(3, per=2.0)])),
    "renew": lambda r, b, step, now, ids: b.renew("q", r.choice(["w1", "w2"]), r.sample(ids, min(len(ids), 3)), 5, now),
    "cancel": lambda r, b, step, now, ids: b.cancel("q", r.choice([*ids, "nope"]), now),
    "retry": lambda r, b, step, now, ids: b.retry("q", r.choice([None, r.sample(ids, min(len(ids), 2))]), now),
    "clean": lambda r, b, step, now, ids: b.clean(
        "q", r.choice([JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED]),
        **r.choice([{"finished_before": now - 1}, {"keep_last": r.randint(0, 3)}, {"expired_at": now},
                    {"keep_last": 1, "limit": 1}])),  # type: ignore[arg-type]
    "recover": lambda r, b, step, now, ids: b.recover("q", now),
    "progress": lambda r, b, step, now, ids: b.set_progress(
        "q", r.choice(["w1", "w2"]), r.choice([*ids, "x"]), Progress(percent=step % 100, extra={"s": 1})),
    "checkpoint": lambda r, b, step, now, ids: b.set_checkpoint("q", r.choice(["w1", "w2"]), r.choice([*ids, "x"]),
                                                                [step]),
    "pause": lambda r, b, step, now, ids: b.set_paused("q", r.random() < 0.4),
    "list": lambda r, b, step, now, ids: b.list(
        "q", states=r.choice([None, {JobState.WAITING}, {JobState.ACTIVE, JobState.FAILED}]),
        name=r.choice([None, "a"]), worker=r.choice([None, None, "w1"]), offset=r.choice([0, 0, 1, 3]),
        limit=r.choice([1, 5, 100])),
    "counts": lambda r, b, step, now, ids: b.counts("q"),
    "get": lambda r, b, step, now, ids: b.get("q", r.choice([*ids, "nope"])),
}
_WEIGHTS = {"add": 2, "claim": 2, "finish": 2, "finish_claim": 2}


@pytest.mark.parametrize("seed", range(4))
async def test_same_results_as_the_memory_backend(backend: RedisBackend, seed: int) -> None:
    """Random operations (explicit clocks, one queue, so seqs match too) give identical answers and state."""
    memory = from_url("memory://")
    await memory.open()
    rnd, now, ids = random.Random(seed), 1000.0, list[str]()
    names = [name for name in _STEPS for _ in range(_WEIGHTS.get(name, 1))]
    for step in range(120):
        now += rnd.choice([0.0, 0.001, 0.5, 1.0, 3.0])
        op, state = rnd.choice(names), rnd.getstate()
        results = []
        for b in (memory, backend):
            rnd.setstate(state)  # both backends see the very same call
            results.append(_norm(await _STEPS[op](rnd, b, step, now, ids)))
        assert results[0] == results[1], f"step {step}: {op}"
        ids = sorted({j.id for j in await memory.list("q", limit=10_000)} | set(ids))
        stored = [_norm(sorted(await b.list("q", limit=10_000), key=lambda j: j.id)) for b in (memory, backend)]
        assert stored[0] == stored[1], f"state after step {step}"
    await memory.close()


async def test_connections_closed_by_a_restart_are_not_reused(tmp_path: Path) -> None:
    """After Redis restarts, the idle pooled connections it closed are dropped, not tried: no call fails."""
    with RedisServer(tmp_path, persist=True) as server:
        b = from_url(server.url())
        await b.open()
        try:
            await asyncio.gather(*(b.counts("q") for _ in range(16)))  # leaves 16 idle connections
            server.stop()
            server.start()
            await server.ready()
            for _ in range(20):
                assert (await b.counts("q")).waiting == 0
        finally:
            await b.close()


@jobkit.task(name="rd.echo")
async def echo(ctx: jobkit.Context, n: int) -> int:
    return n


async def test_a_stored_job_that_cannot_be_read_fails_alone(
    backend: RedisBackend, raw: aioredis.Redis, watch: Callable[..., Any]
) -> None:
    """A record no longer readable as a Job (a NaN written by an older jobkit, a hand edit) fails when claimed,
    alone: the worker lives on and runs the rest; the failed job reads again, its record kept in the traceback."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    q = jobkit.Queue(queue, backend=backend)
    nan_run_at, bad_options, good = await q.add(echo, 1), await q.add(echo, 2), await q.add(echo, 3)
    prefix = f"jobkit:{{{queue}}}:"
    await raw.hset(prefix + "j:" + nan_run_at.id, "run_at", "nan")  # type: ignore[misc]
    data = await raw.get(prefix + "d:" + bad_options.id)
    sl = int(await raw.hget(prefix + "j:" + bad_options.id, "sl"))  # type: ignore[misc]
    static = data[: sl - 12].rsplit(',"options":', 1)[0] + ',"options":{"backoff":{"delay":null}}'
    await raw.set(prefix + "d:" + bad_options.id, static + data[sl - 12:])
    await raw.hset(prefix + "j:" + bad_options.id, "sl", len(static) + 12)  # type: ignore[misc]
    worker = jobkit.Worker([echo], backend=backend, queues=[queue], handle_signals=False)
    async with watch(backend, queue) as w, worker:
        assert await jobkit.JobHandle(good, backend, echo).result(timeout=10) == 3
        await w.until(lambda e: e.event == "failed", count=2)
        assert not worker.stopping
    for planted, why in ((nan_run_at, "Invalid JSON"), (bad_options, "options.backoff.delay")):
        done = await backend.get(queue, planted.id)
        assert done is not None and done.state is JobState.FAILED and done.attempts == 1
        assert done.error is not None and "could not be read" in done.error and why in done.error
        assert done.traceback is not None and planted.id in done.traceback  # the record as it was read
        assert done.finished_at is not None and done.history[-1].state is JobState.FAILED
        assert done.data == planted.data
    assert {j.state for j in await q.jobs()} == {JobState.FAILED, JobState.COMPLETED}
    counts = await q.counts()
    assert counts.failed == 2 and counts.active == 0


async def test_a_flow_of_1000_children_on_one_queue_is_one_script(backend: RedisBackend, raw: aioredis.Redis) -> None:
    """Bulk: the parent and its 1,000 children are added by one EVALSHA, not one round trip per child."""

    async def evalsha_calls() -> int:  # scripts run as EVALSHA or, from a function library, FCALL
        stats = await raw.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "fcall"))

    before = await evalsha_calls()
    h = await jobkit.flow("any.parent", None, children=[("any.child", i, {"queue": "bulk"}) for i in range(1000)],
                          queue="bulk", backend=backend)
    assert await evalsha_calls() - before == 1
    counts = await backend.counts("bulk")
    assert (counts.waiting, counts.waiting_children) == (1000, 1) and "bulk" in await backend.queues()
    assert h.last.flow is not None and h.last.flow.total == 1000


async def test_a_flow_left_half_added_fails_after_its_deadline(backend: RedisBackend) -> None:
    """A producer that died between a flow's scripts leaves its parent unsealed: maintenance fails it (it would wait
    for children never added) with a message saying how to complete it; before the deadline it waits."""
    from jobkit.backends.redis import _flow_nodes
    from jobkit.flows import FlowNode, flow_specs

    specs = flow_specs(FlowNode("any.parent", children=[("any.child", 1, {"queue": "half-b"})], queue="half-a",
                                job_id="p"), time.time())
    nodes = _flow_nodes(specs)
    await backend._flow_level(nodes, 0, {}, {}, {}, repr(time.time()), ["half-a", "half-b"])  # then it "dies"
    parent = await backend.get("half-a", "p")
    assert parent is not None and parent.state is JobState.WAITING_CHILDREN
    assert await backend.get("half-b", specs[1].job.id) is None
    await backend.redeliver("half-a", time.time() + 60)
    assert (await backend.get("half-a", "p")).state is JobState.WAITING_CHILDREN  # type: ignore[union-attr]
    await backend.redeliver("half-a", time.time() + 601)
    failed = await backend.get("half-a", "p")
    assert failed is not None and failed.state is JobState.FAILED
    assert "not completely added" in (failed.error or "") and "add the flow again" in (failed.error or "")
    again = await jobkit.flow("any.parent", None, children=[("any.child", 1, {"queue": "half-b",
                                                                            "job_id": specs[1].job.id})],
                              queue="half-a", job_id="p", backend=backend)
    assert again.last.state is JobState.WAITING_CHILDREN
    assert (await backend.counts("half-b")).waiting == 1


async def test_request_connections_are_bounded_and_kept_through_a_steady_load(private_redis: int) -> None:
    """A burst of 500 calls opens at most LANE_LIMIT connections, and rounds of 40 concurrent calls (more than the
    LANE_IDLE kept however long idle) reuse theirs instead of opening a connection per call."""
    from jobkit.backends._redis_servers import LANE_IDLE, LANE_LIMIT

    url = f"redis://:{PASSWORD}@127.0.0.1:{private_redis}/0"
    raw = await _raw(url)
    b = from_url(url)
    await b.open()
    try:
        q = jobkit.Queue("lanes", backend=b)
        j = await q.add("t", {})

        async def opened() -> int:
            return int((await raw.info("stats"))["total_connections_received"])

        before = await opened()
        await asyncio.gather(*(q.get(j.id) for _ in range(500)))
        assert await opened() - before <= LANE_LIMIT + 1  # +1: this test's own INFO connection may be new
        before = await opened()
        for _ in range(20):
            await asyncio.gather(*(q.get(j.id) for _ in range(40)))
        assert LANE_IDLE < 40 and await opened() - before <= 1, "connections past LANE_IDLE were closed after use"
    finally:
        await b.close()
        await raw.aclose()
