"""In a real kernel, submitted jobs are seen through to their end by the embedded worker on the kernel's loop:
retries with a 3 s backoff while no cell awaits them, `run_sync` in a cell, and `retry_failed` after the worker
stopped."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = [
    """
    import asyncio, jobkit
    left = {"n": 2}

    @jobkit.task(queue="kernel", attempts=3, backoff=jobkit.Backoff.fixed(3.0))
    async def flaky(ctx, n: int) -> int:
        if left["n"]:
            left["n"] -= 1
            raise ConnectionError("try again")
        return n * ctx.attempt

    async def settled(handle, timeout=15.0):
        # Reads the job without awaiting the handle (a waiting handle would start a worker of its own).
        async with asyncio.timeout(timeout):
            while not (job := await handle.job()).finished:
                await asyncio.sleep(0.1)
        return job.state.value
    """,
    "handle = await jobkit.submit(flaky, 5)\nprint(handle.last.state.value)",
    "print(await settled(handle), await handle.result(timeout=1))",
    "left['n'] = 1\nprint(jobkit.run_sync(flaky, 2, timeout=30))",
    "left['n'] = 1\nfailed = await jobkit.submit(flaky, 10, attempts=1)\nprint(await settled(failed))",
    "await asyncio.sleep(3)  # the embedded worker finds nothing left and stops\n"
    "print(await jobkit.Queue('kernel').retry_failed())",
    "print(await settled(failed), failed.last.state.value, (await failed.job()).result)",
]


@pytest.mark.timeout(120)
def test_retries_delays_and_retry_failed_in_a_kernel(tmp_path: Path, kernel_env: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in CELLS])
    client = nbclient.NotebookClient(nb, kernel_name=kernel_env, timeout=60, allow_errors=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    printed = ["".join(o.get("text", "") for o in c.outputs).strip() for c in nb.cells]
    assert printed[1:] == ["waiting", "completed 15", "4", "failed", "1", "completed completed 10"], printed
    assert (tmp_path / ".jobkit" / "jobs.db").exists(), "the kernel did not use the SQLite default"
