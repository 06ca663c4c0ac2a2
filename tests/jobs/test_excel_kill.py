"""kill -9 a worker in the middle of an import: after recovery the destination holds every row exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs

from .excel_helpers import write_big

ROOT = Path(__file__).resolve().parents[2]
ROWS, BATCH = 3000, 100

WORKER = textwrap.dedent("""
    import asyncio, sys
    import jobkit, jobkit.jobs
    import tests.jobs.excel_helpers  # registers the Customer row model
    from jobkit.jobs import register_destination
    from jobkit.jobs.excel.sqlite_destination import SQLiteDestination

    class SlowSQLite(SQLiteDestination):
        async def write_counted(self, rows, state):
            await asyncio.sleep(0.1)  # slow enough to be killed mid-import
            return await super().write_counted(rows, state)

    register_destination("slowsqlite", lambda url: SlowSQLite("sqlite" + url[len("slowsqlite"):]))
    asyncio.run(jobkit.Worker([jobkit.jobs.excel_import], backend=sys.argv[1], lease=1.0).run())
""")


async def wait_for(backend: jobkit.Backend, job_id: str, batches: int, timeout: float = 60.0) -> jobkit.Job:
    """Poll (bounded) until the job's checkpoint shows `batches` committed batches."""
    async def poll() -> jobkit.Job:
        while True:
            job = await backend.get("default", job_id)
            assert job is not None
            if job.checkpoint and job.checkpoint["batches"] >= batches:
                return job
            assert not job.finished, job.error
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


@pytest.mark.slow
async def test_sigkill_mid_import_then_resume_exactly_once(tmp_path: Path) -> None:
    src = write_big(tmp_path / "big.xlsx", ROWS)
    db = tmp_path / "warehouse.db"
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_FILE_ROOTS": str(tmp_path)}  # the workers' file root
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, str(script), url], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    backend = await jobkit.connect(url)
    try:
        job = await jobkit.Queue("default", backend=backend).add(jobkit.jobs.excel_import, {
            "path": str(src), "sheet": "Data", "row_model": "Customer", "batch_size": BATCH,
            "destination": f"slowsqlite:///{db}?table=customers"})
        first = spawn()
        running = await wait_for(backend, job.id, batches=5)
        assert running.state is jobkit.JobState.ACTIVE
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        with sqlite3.connect(db) as conn:
            (committed,) = conn.execute("SELECT COUNT(*) FROM customers").fetchone()
        assert BATCH * 5 <= committed < ROWS, "the kill did not land mid-import"

        spawn()
        done = await jobkit.JobHandle(job, backend, jobkit.jobs.excel_import).wait(timeout=90)
        assert done.state is jobkit.JobState.COMPLETED, done.error
        assert done.stalls == 1 and done.attempts == 2
        assert done.result["rows_imported"] == ROWS and done.result["rows_read"] == ROWS
        with sqlite3.connect(db) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM customers ORDER BY id")]
        assert ids == list(range(1, ROWS + 1)), "rows lost or imported twice"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        await backend.close()
