"""Every endpoint x owner / other owner / admin / no token, on SQLite and Redis: a token sees and touches only its
owner's jobs (another owner's job is 404 everywhere), queue operations are an admin's, no token is 401."""

from __future__ import annotations

from typing import Any

import pytest

import jobkit
from tests.serve import tasks
from tests.serve.conftest import Served, auth

JOBS = f"/queues/{tasks.QUEUE}/jobs"
WHO = ["alice", "bob", "admin", None]  # alice owns the job under test; bob is the other owner


async def _alices_job(served: Served, **body: Any) -> dict[str, Any]:
    r = await served.client.post(JOBS, headers=auth("alice"), json={
        "task": "serve_tests.echo", "payload": {"text": "mine"}, "tags": {"doc": "d-1"}, **body})
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    assert job["owner"] == "alice" and job["tags"] == {"doc": "d-1"}
    return job


def _expect(who: str | None, mine: int) -> int:
    return {"alice": mine, "admin": mine, "bob": 404, None: 401}[who]  # type: ignore[index]


@pytest.mark.parametrize("who", WHO)
async def test_get(served: Served, who: str | None) -> None:
    job = await _alices_job(served)
    r = await served.client.get(f"/jobs/{job['id']}", headers=auth(who))
    assert r.status_code == _expect(who, 200), r.text
    if who == "bob":
        assert "alice" not in r.text and "mine" not in r.text


@pytest.mark.parametrize("who", WHO)
async def test_list(served: Served, who: str | None) -> None:
    job = await _alices_job(served)
    await jobkit.Queue(tasks.QUEUE, backend=served.backend).add("serve_tests.echo", {"text": "nobody's"})
    r = await served.client.get("/jobs", params={"tag": "doc=d-1"}, headers=auth(who))
    if who is None:
        assert r.status_code == 401
        return
    ids = [j["id"] for j in r.json()["jobs"]]
    assert ids == ([] if who == "bob" else [job["id"]])
    everyone = [j["id"] for j in (await served.client.get("/jobs", headers=auth(who))).json()["jobs"]]
    assert len(everyone) == {"alice": 1, "bob": 0, "admin": 2}[who]


@pytest.mark.parametrize("who", WHO)
async def test_events(served: Served, who: str | None) -> None:
    job = await _alices_job(served)
    await served.backend.cancel(tasks.QUEUE, job["id"], 0.0)  # finished: the stream is a snapshot, then ends
    r = await served.client.get(f"/jobs/{job['id']}/events", headers=auth(who))
    assert r.status_code == _expect(who, 200)
    if r.status_code == 200:
        assert "event: snapshot" in r.text and job["id"] in r.text


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("action", ["cancel", "retry"])
async def test_cancel_and_retry_touch_only_what_the_token_may(served: Served, who: str | None, action: str) -> None:
    job = await _alices_job(served)
    untouched, done = jobkit.JobState.WAITING, jobkit.JobState.CANCELLED
    if action == "retry":
        await served.backend.cancel(tasks.QUEUE, job["id"], 0.0)
        untouched, done = done, untouched
    method, path = ("DELETE", f"/jobs/{job['id']}") if action == "cancel" else ("POST", f"/jobs/{job['id']}/retry")
    r = await served.client.request(method, path, headers=auth(who))
    assert r.status_code == _expect(who, 200)
    stored = await served.backend.get(tasks.QUEUE, job["id"])
    assert stored is not None and stored.state is (done if who in ("alice", "admin") else untouched)


@pytest.mark.parametrize("who", WHO)
async def test_submit(served: Served, who: str | None) -> None:
    r = await served.client.post(JOBS, headers=auth(who), json={"task": "serve_tests.echo", "payload": {"text": "x"}})
    assert r.status_code == (401 if who is None else 202)
    if who is not None:
        assert r.json()["owner"] == (None if who == "admin" else who)


async def test_an_owner_cannot_claim_another_owners_job_id_or_pose_as_someone(served: Served) -> None:
    job = await _alices_job(served, job_id="report-1")
    r = await served.client.post(JOBS, headers=auth("bob"), json={
        "task": "serve_tests.echo", "payload": {"text": "x"}, "job_id": "report-1"})
    assert r.status_code == 409 and "mine" not in r.text and "alice" not in r.text
    r = await served.client.post(JOBS, headers=auth("bob"), json={
        "task": "serve_tests.echo", "payload": {"text": "x"}, "owner": "alice"})
    assert r.status_code == 403
    r = await served.client.post(JOBS, headers=auth("admin"), json={
        "task": "serve_tests.echo", "payload": {"text": "x"}, "owner": "alice"})
    assert r.status_code == 202 and r.json()["owner"] == "alice"
    assert (await served.backend.get(tasks.QUEUE, job["id"])).data == {"text": "mine", "path": None}  # type: ignore[union-attr]


@pytest.mark.parametrize("who", WHO)
async def test_queue_operations_are_an_admins(served: Served, who: str | None) -> None:
    for action in ("pause", "resume", "clean", "retry-failed"):
        r = await served.client.post(f"/queues/{tasks.QUEUE}/{action}", headers=auth(who))
        assert r.status_code == {"admin": 200, None: 401}.get(who, 403), (action, r.text)
    r = await served.client.get("/metrics", headers=auth(who))
    assert r.status_code == {"admin": 200, None: 401}.get(who, 403)
    r = await served.client.get("/queues", headers=auth(who))
    assert r.status_code == (401 if who is None else 200)
