"""kill -9 a worker right after a batch committed, before its checkpoint: the resumed insert commits each batch once.

With on_conflict="error", a batch written twice would fail the job, so completing proves exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs

from .conftest import Db

ROOT = Path(__file__).resolve().parents[2]
ROWS, BATCH, STALL_AFTER = 3000, 100, 5

WORKER = textwrap.dedent("""
    import asyncio, os, sys, time
    from pathlib import Path
    import jobkit, jobkit.jobs
    from jobkit.jobs.db.sqlite_writer import SQLiteWriter
    from jobkit.jobs.db.postgres_writer import PostgresWriter

    if os.environ.get("PG_URL"):
        jobkit.jobs.register_database("pg", os.environ["PG_URL"])
    flag = os.environ.get("STALL_FLAG")

    def slowed(cls):
        write = cls.write
        async def slow_write(self, rows, state):
            await asyncio.sleep(0.02)
            counts = await write(self, rows, state)
            self.done = getattr(self, "done", 0) + 1
            if flag and self.done == int(os.environ["STALL_AFTER"]):
                Path(flag).write_text("committed")  # the batch and its marker are in; the checkpoint is not
                time.sleep(60)  # blocks the loop: no checkpoint, no lease renewal, until the kill
            return counts
        cls.write = slow_write

    slowed(SQLiteWriter)
    slowed(PostgresWriter)
    asyncio.run(jobkit.Worker([jobkit.jobs.db_insert], backend=sys.argv[1], lease=1.0).run())
""")


async def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    async def poll() -> None:
        while not path.exists():
            assert proc.poll() is None, "the worker died before the stall"
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.slow
async def test_sigkill_between_commit_and_checkpoint_then_resume_exactly_once(tmp_path: Path, db: Db) -> None:
    await db.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"id": i, "name": f"n{i}", "qty": i}) + "\n"
                                                  for i in range(1, ROWS + 1)))
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    flag = tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_FILE_ROOTS": str(tmp_path), "STALL_AFTER": str(STALL_AFTER)}
    if db.kind == "postgresql":
        from jobkit.jobs.db.databases import resolve_database

        env["PG_URL"] = resolve_database("pg", ValueError).target
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(**extra: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, str(script), url], cwd=ROOT, env={**env, **extra},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    backend = await jobkit.connect(url)
    try:
        job = await jobkit.Queue("default", backend=backend).add(jobkit.jobs.db_insert, {
            "destination": db.ref, "table": "items", "path": "items.jsonl", "batch_size": BATCH})
        first = spawn(STALL_FLAG=str(flag))
        await wait_for_file(flag, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        stored = await db.rows("SELECT count(*) FROM items")
        assert stored == [(BATCH * STALL_AFTER,)]
        killed = await backend.get("default", job.id)
        assert killed is not None and killed.checkpoint["batches"] == STALL_AFTER - 1, "the checkpoint was saved"

        spawn()
        done = await jobkit.JobHandle(job, backend, jobkit.jobs.db_insert).wait(timeout=90)
        assert done.state is jobkit.JobState.COMPLETED, done.error
        assert done.stalls == 1 and done.attempts == 2
        result = done.result
        assert (result["inserted"], result["rows_read"], result["batches"]) == (ROWS, ROWS, ROWS // BATCH)
        ids = [r[0] for r in await db.rows("SELECT id FROM items ORDER BY id")]
        assert ids == list(range(1, ROWS + 1)), "rows lost or inserted twice"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        await backend.close()
