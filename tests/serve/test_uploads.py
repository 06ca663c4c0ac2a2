"""Multipart uploads: stored under the upload root with a size limit, handed to the job by path, small ones run at
once, large or ?async=true ones queued, and removed once their job is gone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jobkit
from jobkit.serve._uploads import sweep
from tests.serve import tasks
from tests.serve.conftest import Served, auth

JOBS = f"/queues/{tasks.QUEUE}/jobs"


def form(text: str = "hi") -> dict[str, str]:
    return {"task": "serve_tests.echo", "payload": json.dumps({"text": text})}


async def test_a_small_upload_runs_at_once_and_the_job_reads_it_by_path(
    served: Served, worker: jobkit.Worker, tmp_path: Path
) -> None:
    r = await served.client.post(JOBS, data=form(), files={"file": ("../../etc/passwd", b"x" * 1000)},
                                 headers=auth("admin"))
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["result"] == {"text": "hi", "size": "1000"}
    path = Path(job["data"]["path"])
    assert path.parent.parent == tmp_path / "uploads" and path.name == "passwd"  # no way out of the root


async def test_async_or_large_uploads_are_queued(served: Served, tmp_path: Path) -> None:
    r = await served.client.post(f"{JOBS}?async=true", data=form(), files={"file": ("a.xlsx", b"abc")},
                                 headers=auth("admin"))
    assert r.status_code == 202 and r.json()["state"] == "waiting"
    assert Path(r.json()["data"]["path"]).read_bytes() == b"abc"


async def test_too_large_is_413_and_nothing_is_kept_or_queued(served: Served, tmp_path: Path) -> None:
    from jobkit.serve import app
    from tests.serve.conftest import config, httpx

    small = app(config(tmp_path, upload_max_bytes=1000), backend=served.backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=small), base_url="http://t") as client:
        r = await client.post(JOBS, data=form(), files={"file": ("big.bin", os.urandom(200_000))},
                              headers=auth("admin"))
        assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]
        r = await client.post(JOBS, data=form(), files={"file": ("mid.bin", os.urandom(5000))}, headers=auth("admin"))
        assert r.status_code == 413
    await small.state.jobkit_holder.close()
    assert not list((tmp_path / "uploads").glob("*/*.bin"))
    assert await served.backend.queues() == []


async def test_a_refused_task_leaves_no_file(served: Served, tmp_path: Path) -> None:
    r = await served.client.post(JOBS, data={"task": "not.allowed"}, files={"file": ("a.txt", b"abc")},
                                 headers=auth("admin"))
    assert r.status_code == 403
    assert not list((tmp_path / "uploads").glob("*/a.txt"))


async def test_uploads_go_with_their_jobs(served: Served, tmp_path: Path) -> None:
    kept = await served.client.post(f"{JOBS}?async=1", data=form(), files={"file": ("k.txt", b"k")},
                                    headers=auth("admin"))
    gone = await served.client.post(f"{JOBS}?async=1", data=form(), files={"file": ("g.txt", b"g")},
                                    headers=auth("admin"))
    q = jobkit.Queue(tasks.QUEUE, backend=served.backend)
    await q.cancel(gone.json()["id"])
    assert await q.clean("cancelled") == 1
    root = tmp_path / "uploads"
    assert await sweep(served.backend, root) == 0  # fresh folders are left alone: their job may be on its way
    old = time.time() - 3600
    for folder in root.iterdir():
        os.utime(folder, (old, old))
    assert await sweep(served.backend, root) == 1
    assert Path(kept.json()["data"]["path"]).exists() and not Path(gone.json()["data"]["path"]).exists()


async def test_an_upload_belongs_to_the_token_that_sent_it(served: Served) -> None:
    r = await served.client.post(f"{JOBS}?async=1", data=form(), files={"file": ("a.csv", b"1,2")},
                                 headers=auth("alice"))
    assert r.status_code == 202 and r.json()["owner"] == "alice"
    assert (await served.client.get(f"/jobs/{r.json()['id']}", headers=auth("bob"))).status_code == 404
    assert (await served.client.get(f"/jobs/{r.json()['id']}", headers=auth("alice"))).status_code == 200


async def test_a_bad_form_is_422_and_leaves_no_file(served: Served, tmp_path: Path) -> None:
    for data in ({"task": "t" * 500}, {"task": "serve_tests.echo", "payload": "[1]"},
                 {"task": "serve_tests.echo", "payload": "{not json"}):
        r = await served.client.post(JOBS, data=data, files={"file": ("a.txt", b"abc")}, headers=auth("admin"))
        assert r.status_code == 422, (data, r.text)
    assert not list((tmp_path / "uploads").glob("*/a.txt"))
