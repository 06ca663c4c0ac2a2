"""Bounded Redis memory (issue 4, item 8): after 100,000 jobs under default retention, with nobody calling clean,
the keys and memory used are what retention allows — and they stay flat, not growing with the number of jobs.

Default retention: completed jobs kept 24 h or the last 1000 per queue, enforced as jobs finish (in the finish
script itself), so the bound holds at every moment; the event stream is trimmed to about 10,000 entries. The jobs
run on a private redis-server (nothing persisted) through one in-process Worker; benchmarks/redis_memory.py drives
them and prints the same figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from private_redis import RedisServer

from benchmarks.redis_memory import HEADER, KEEP, Snapshot, row, run

EVENTS_MAX = 10_000  # _lib.lua
# XTRIM MAXLEN ~ keeps whole stream nodes (100 entries each), and a script trims before its first event and every
# 1000th, so one script call (an add_bulk of 1000 jobs) may overshoot by up to 1000 entries.
STREAM_BOUND = EVENTS_MAX + 1000 + 100
# Keys besides the two of each retained job: meta, events, wake, completed, ix:completed, exp:completed,
# jobkit:queues and the worker heartbeat hash and zset.
FIXED_KEYS = 9
# And the metrics' (docs/metrics.md): their index zset, and a hash per minute that had jobs end (14 days at most).
METRIC_INDEX = 1
CHECKPOINTS = [2_000, 10_000, 50_000, 100_000]
# Hash tables resize lazily and jemalloc keeps freed pages a while: what used_memory may gain after the 10,000th
# job, when the retained set is already full. 90,000 more jobs of ~1 KB would add ~90 MB if anything stayed.
MEMORY_SLACK = 2 << 20


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_keys_and_memory_stay_within_retention_over_100k_jobs(tmp_path: Path) -> None:
    snapshots: list[Snapshot] = []
    with RedisServer(tmp_path) as server:
        snapshots = await run(server.url(), CHECKPOINTS)
    print("\n" + HEADER + "\n" + "\n".join(row(s) for s in snapshots))
    assert [s.jobs for s in snapshots] == CHECKPOINTS

    for s in snapshots:
        z = s.sizes
        # After a maintenance pass: at most the last 1000 completed jobs, each with exactly its two keys (a
        # removed job's data is gone, not hidden), and one index entry per retained job.
        assert z.completed == min(KEEP, s.jobs), (s.jobs, z)
        assert z.completed_index == z.completed, (s.jobs, z)
        assert z.dbsize == 2 * z.completed + FIXED_KEYS + METRIC_INDEX + z.metric_minutes, (s.jobs, z)
        assert 1 <= z.metric_minutes <= s.seconds / 60 + 2, (s.jobs, z)  # one per minute the run has spanned
        assert z.stream <= STREAM_BOUND, (s.jobs, z)
        # Sampled every 0.25 s while the jobs ran: never more than the newest 1000 completed jobs.
        assert s.peak_completed <= KEEP, (s.jobs, s.peak_completed)

    # Flat: from 10,000 jobs on the retained set is full (1000 jobs, ~10,000 events). 90,000 more jobs of about
    # 1 KB each would add ~90 MB if anything of them stayed; allow only MEMORY_SLACK.
    steady = snapshots[1].sizes.used_memory
    for s in snapshots[2:]:
        assert s.sizes.used_memory <= steady + MEMORY_SLACK, (s.jobs, s.sizes.used_memory, steady)
