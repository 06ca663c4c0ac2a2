"""A worker process for tests/cluster/test_cluster_flows.py that dies (SIGKILL) right after a child's end wrote its
notice for a parent on another queue, before delivering it: the moment between a flow's two steps on a cluster.

    python -m tests.cluster.flow_worker URL QUEUE
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import jobkit
from jobkit.backends.redis import RedisBackend


@jobkit.task(name="cluster.flow_child")
async def flow_child(ctx: jobkit.Context, n: int) -> int:
    return n * 10


@jobkit.task(name="cluster.flow_parent")
async def flow_parent(ctx: jobkit.Context) -> list[int]:
    return [c.result for c in await ctx.children()]


_deliver = RedisBackend._deliver_notices


async def _die_before_delivering(self: RedisBackend, source: str, notices: Sequence[str] | None) -> None:
    if notices:
        os.kill(os.getpid(), signal.SIGKILL)
    await _deliver(self, source, notices)


async def main(url: str, queue: str) -> None:
    RedisBackend._deliver_notices = _die_before_delivering  # type: ignore[method-assign]
    await jobkit.Worker([flow_child], backend=url, queues=[queue], handle_signals=False).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
