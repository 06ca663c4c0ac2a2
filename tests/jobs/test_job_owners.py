"""Built-in jobs run for an owner (`Job.owner`) read and export only that owner's data.

These need the engine's owners (`submit(..., owner=)`, `Job.owner`); until they are on this branch the tests
are skipped with that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend

from .conftest import Db

pytestmark = pytest.mark.skipif("owner" not in jobkit.Job.model_fields,
                                reason="needs Job.owner and submit(owner=), from the engine's owners (issue 14)")


@jobkit.task(name="tests.owners.rows", queue="default")
async def produce(ctx: jobkit.Context) -> list[dict[str, Any]]:
    return [{"id": 1, "name": "a", "qty": 1}]


async def test_result_of_reads_only_the_owners_jobs(memory: Backend, db: Db) -> None:
    await db.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)")
    theirs = await jobkit.submit(produce, backend=memory, owner="alice")  # type: ignore[call-arg]
    await theirs.result(timeout=30)
    payload = {"destination": db.ref, "table": "items", "result_of": {"job_id": theirs.id}}
    mine = await jobkit.submit(jobkit.jobs.db_insert, payload, backend=memory, owner="bob")  # type: ignore[call-arg]
    with pytest.raises(jobkit.JobFailed, match="does not exist"):
        await mine.result(timeout=30)
    same = await jobkit.submit(jobkit.jobs.db_insert, payload, backend=memory, owner="alice")  # type: ignore[call-arg]
    assert (await same.result(timeout=30)).inserted == 1


async def test_an_owned_export_is_scoped_to_its_owner(memory: Backend, tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "w.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, owner TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(1, "alice"), (2, "bob"), (3, "alice")])
    jobkit.jobs.register_database("owned", f"sqlite:///{tmp_path / 'w.db'}", owner_column="owner")
    handle = await jobkit.submit(jobkit.jobs.export, {"source": "owned", "table": "orders", "columns": ["id"],
                                                      "path": "alice.csv"}, backend=memory,
                                 owner="alice")  # type: ignore[call-arg]
    result = await handle.result(timeout=30)
    assert Path(result.path).read_text().splitlines() == ["id", "1", "3"] and result.owner == "alice"
    other = await jobkit.submit(jobkit.jobs.export, {"source": "owned", "table": "orders", "owner": "bob"},
                                backend=memory, owner="alice")  # type: ignore[call-arg]
    with pytest.raises(jobkit.JobFailed, match="cannot ask for another owner"):
        await other.result(timeout=30)
