"""A worker process for the AI job tests: `python -m tests.jobs.ai_worker URL [concurrency]`.

Its provider, key and file roots come from the environment (JOBKIT_AI_BASE_URL, OPENAI_API_KEY, JOBKIT_FILE_ROOTS),
as a deployed worker's would. It prices "dear-model" and registers a slow SQLite sink (to be killed mid-batch).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import jobkit
import jobkit.jobs
from jobkit.jobs.ai import register_sink, set_price
from jobkit.jobs.ai.sinks import SQLiteSink

set_price("dear-model", input=1000.0, output=1000.0)


class SlowSQLite(SQLiteSink):
    async def write(self, rows: Sequence[dict[str, Any]]) -> None:
        await asyncio.sleep(0.05)  # slow enough to be killed mid-batch
        await super().write(rows)


register_sink("slowsqlite", lambda url, created: SlowSQLite("sqlite" + url[len("slowsqlite"):]))

if __name__ == "__main__":
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    asyncio.run(jobkit.Worker([jobkit.jobs.ai_batch], backend=sys.argv[1], lease=1.0, concurrency=concurrency).run())
