"""The JSON API on SQLite and Redis, in-process: submit, wait, get, list, cancel, retry, queue operations, health."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jobkit
from tests.serve import tasks
from tests.serve.conftest import Served, auth

JOBS = f"/queues/{tasks.QUEUE}/jobs"


async def test_submit_queues_a_job_and_get_reads_it(served: Served) -> None:
    r = await served.client.post(JOBS, json={"task": "serve_tests.echo", "payload": {"text": "hi"}},
                                 headers=auth("admin"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "waiting" and job["data"] == {"text": "hi", "path": None} and "checkpoint" not in job
    got = await served.client.get(f"/jobs/{job['id']}", headers=auth("admin"))
    assert got.status_code == 200 and got.json()["id"] == job["id"]
    stored = await served.backend.get(tasks.QUEUE, job["id"])
    assert stored is not None and stored.name == "serve_tests.echo"


async def test_wait_returns_the_result_when_a_worker_runs_it(served: Served, worker: jobkit.Worker) -> None:
    r = await served.client.post(f"{JOBS}?wait=20", json={"task": "serve_tests.echo", "payload": {"text": "x"}},
                                 headers=auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "completed" and r.json()["result"] == {"text": "x", "size": None}


async def test_wait_that_runs_out_answers_202_with_the_job_as_it_is(served: Served) -> None:
    r = await served.client.post(f"{JOBS}?wait=0.3", json={"task": "serve_tests.echo", "payload": {"text": "x"}},
                                 headers=auth("admin"))
    assert r.status_code == 202 and r.json()["state"] == "waiting"


async def test_only_allow_listed_tasks_and_valid_payloads_are_queued(served: Served) -> None:
    r = await served.client.post(JOBS, json={"task": "os.system", "payload": "rm -rf /"}, headers=auth("admin"))
    assert r.status_code == 403 and "allow-list" in r.json()["detail"]
    r = await served.client.post(JOBS, json={"task": "serve_tests.echo", "payload": {"text": 5}},
                                 headers=auth("admin"))
    assert r.status_code == 422 and "text" in r.json()["detail"]
    r = await served.client.post(JOBS, content=b"{not json", headers=auth("admin"))
    assert r.status_code == 422
    assert await served.backend.queues() == []  # nothing was queued


async def test_list_pages_with_a_cursor_and_filters(served: Served) -> None:
    q = jobkit.Queue(tasks.QUEUE, backend=served.backend)
    ids = [(await q.add("serve_tests.echo", {"text": str(i)})).id for i in range(5)]
    await q.add("serve_tests.fail", {})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"task": "serve_tests.echo", "limit": "2", **({"cursor": cursor} if cursor else {})}
        r = await served.client.get("/jobs", params=params, headers=auth("admin"))
        assert r.status_code == 200, r.text
        seen += [j["id"] for j in r.json()["jobs"]]
        cursor = r.json()["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each once
    r = await served.client.get("/jobs", params={"state": "failed"}, headers=auth("admin"))
    assert r.json()["jobs"] == []
    assert (await served.client.get("/jobs", params={"cursor": "garbage!"}, headers=auth("admin"))).status_code == 400


async def test_delete_says_what_it_caught_and_is_idempotent(served: Served) -> None:
    job = await jobkit.Queue(tasks.QUEUE, backend=served.backend).add("serve_tests.echo", {"text": "x"})
    first = await served.client.delete(f"/jobs/{job.id}", headers=auth("admin"))
    assert first.status_code == 200
    assert first.json()["caught"] == "waiting" and first.json()["state"] == "cancelled"
    again = await served.client.delete(f"/jobs/{job.id}", headers=auth("admin"))
    assert again.status_code == 200 and again.json()["caught"] == "cancelled"
    assert (await served.client.delete("/jobs/nope", headers=auth("admin"))).status_code == 404


async def test_retry_sends_a_cancelled_job_back_and_refuses_a_waiting_one(served: Served) -> None:
    q = jobkit.Queue(tasks.QUEUE, backend=served.backend)
    job = await q.add("serve_tests.echo", {"text": "x"})
    refused = await served.client.post(f"/jobs/{job.id}/retry", headers=auth("admin"))
    assert refused.status_code == 409 and "waiting" in refused.json()["detail"]
    await q.cancel(job.id)
    r = await served.client.post(f"/jobs/{job.id}/retry", headers=auth("admin"))
    assert r.status_code == 200
    assert (await q.get(job.id)).state is jobkit.JobState.WAITING  # type: ignore[union-attr]


async def test_queue_operations(served: Served, worker: jobkit.Worker) -> None:
    q = jobkit.Queue(tasks.QUEUE, backend=served.backend)
    failed = await q.add("serve_tests.fail", {"why": "no"})
    await (await q.handle(failed.id)).wait(20)
    r = await served.client.post(f"/queues/{tasks.QUEUE}/pause", headers=auth("admin"))
    assert r.status_code == 200 and (await q.counts()).paused
    r = await served.client.get("/queues", headers=auth("admin"))
    [mine] = [x for x in r.json()["queues"] if x["name"] == tasks.QUEUE]
    assert mine["counts"]["failed"] == 1 and mine["counts"]["paused"] is True
    assert mine["metrics"]["failed_total"] == 1 and mine["metrics"]["success_rate"] == 0.0
    assert sum(mine["metrics"]["failed"]) == 1 and len(mine["metrics"]["failed"]) >= 60  # a minute's series
    report = await jobkit.health(served.backend, thresholds=jobkit.HealthThresholds(failures_per_minute_degraded=0.1))
    assert report.status == "degraded" and report.queues[tasks.QUEUE].failures_per_minute > 0
    assert any("failures per minute" in p for p in report.problems)
    r = await served.client.post(f"/queues/{tasks.QUEUE}/retry-failed", headers=auth("admin"))
    assert r.json()["retried"] == 1 and (await q.counts()).waiting == 1  # paused: it waits
    await served.client.post(f"/queues/{tasks.QUEUE}/resume", headers=auth("admin"))
    assert (await (await q.handle(failed.id)).wait(20)).state is jobkit.JobState.FAILED
    r = await served.client.post(f"/queues/{tasks.QUEUE}/clean", params={"state": "failed"}, headers=auth("admin"))
    assert r.json()["removed"] == 1 and await q.get(failed.id) is None
    bad = await served.client.post(f"/queues/{tasks.QUEUE}/clean", params={"state": "active"}, headers=auth("admin"))
    assert bad.status_code == 400 and "finished" in bad.json()["detail"]


async def test_no_token_is_401_and_an_unknown_one_too(served: Served) -> None:
    for method, path in (("GET", "/jobs"), ("GET", "/jobs/x"), ("DELETE", "/jobs/x"), ("POST", "/jobs/x/retry"),
                         ("GET", "/queues"), ("POST", JOBS), ("GET", "/metrics"), ("GET", "/jobs/x/events"),
                         ("POST", f"/queues/{tasks.QUEUE}/pause")):
        r = await served.client.request(method, path)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        r = await served.client.request(method, path, headers={"Authorization": "Bearer tok-mallory"})
        assert r.status_code == 401, (method, path)


async def test_queue_operations_need_an_admin_token(served: Served) -> None:
    for action in ("pause", "resume", "clean", "retry-failed"):
        r = await served.client.post(f"/queues/{tasks.QUEUE}/{action}", headers=auth("alice"))
        assert r.status_code == 403, action
    assert not (await served.backend.counts(tasks.QUEUE)).paused
    assert (await served.client.get("/metrics", headers=auth("alice"))).status_code == 403


async def test_tokens_stored_in_the_backend_work_until_removed(served: Served) -> None:
    from jobkit.serve import add_token, remove_token
    from jobkit.serve._auth import TokenStore

    token = await add_token(served.backend, admin=True)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await served.client.get("/queues", headers=headers)).status_code == 200
    assert await remove_token(served.backend, token)
    store: TokenStore = served.app.state.jobkit.tokens
    store._cache.clear()  # the 5 s cache would keep it a little longer
    assert (await served.client.get("/queues", headers=headers)).status_code == 401
    assert "jobkit-serve" not in [q["name"] for q in (await served.client.get(
        "/queues", headers=auth("admin"))).json()["queues"]]


async def test_health_and_metrics(served: Served) -> None:
    q = jobkit.Queue(tasks.QUEUE, backend=served.backend)
    await q.add("serve_tests.echo", {"text": "x"})  # waiting, and no worker alive: degraded
    anonymous = await served.client.get("/health")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "degraded"}
    detailed = (await served.client.get("/health", headers=auth("alice"))).json()
    assert detailed["backend_reachable"] and detailed["queues"][tasks.QUEUE]["counts"]["waiting"] == 1
    assert any("no worker" in p for p in detailed["problems"])
    python = await jobkit.health(served.backend)
    assert python.status == detailed["status"]
    r = await served.client.get("/metrics", headers=auth("admin"))
    assert r.status_code == 200
    assert f'jobkit_jobs{{queue="{tasks.QUEUE}",state="waiting"}} 1.0' in r.text
    assert 'jobkit_health{status="degraded"} 1.0' in r.text


async def test_metrics_count_finished_jobs_per_queue_and_task(served: Served, worker: jobkit.Worker) -> None:
    r = await served.client.post(f"{JOBS}?wait=20", json={"task": "serve_tests.echo", "payload": {"text": "x"}},
                                 headers=auth("admin"))
    assert r.json()["state"] == "completed"
    text = (await served.client.get("/metrics", headers=auth("admin"))).text
    for task in ("", "serve_tests.echo"):
        assert f'jobkit_finished_recent{{queue="{tasks.QUEUE}",state="completed",task="{task}"}} 1.0' in text
        assert f'jobkit_run_seconds{{quantile="0.95",queue="{tasks.QUEUE}",task="{task}"}}' in text


async def test_a_tokens_file_is_read_again_when_it_changes(served: Served, tmp_path: Path) -> None:
    from jobkit.serve import ServeConfig, app, hash_token
    from tests.serve.conftest import httpx

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"sha256": hash_token("first"), "admin": True}]}))
    application = app(ServeConfig(tokens_file=tokens), backend=served.backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as client:
        assert (await client.get("/queues", headers={"Authorization": "Bearer first"})).status_code == 200
        tokens.write_text(json.dumps({"tokens": [{"sha256": hash_token("second"), "owner": "carol"}]}))
        os.utime(tokens, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new mtime even on coarse clocks
        assert (await client.get("/queues", headers={"Authorization": "Bearer first"})).status_code == 401
        assert (await client.get("/queues", headers={"Authorization": "Bearer second"})).status_code == 200
        tokens.write_text("{not json")
        os.utime(tokens, ns=(time.time_ns() + 2 * 10**9,) * 2)
        broken = await client.get("/queues", headers={"Authorization": "Bearer second"})
        assert broken.status_code == 503 and "tokens file" in broken.json()["detail"]
    await application.state.jobkit_holder.close()


def test_the_single_job_body_is_the_job_view_as_json() -> None:
    """GET /jobs/{id} writes its body with pydantic-core directly: the same JSON as `job_view`, tags or none."""
    import json
    import time

    from jobkit.models import JobOptions, new_job
    from jobkit.serve._state import job_json, job_view

    now = time.time()
    plain = new_job("j1", "t", "q", {"é": [1, 2.5, None]}, JobOptions(), now, now)
    tagged = new_job("j2", "t", "q", {}, JobOptions(), now, now, owner="alice", tags={"doc": "d-1"})
    for job in (plain, tagged):
        assert json.loads(job_json(job)) == job_view(job)
    assert json.loads(job_json(plain))["tags"] == {} and json.loads(job_json(tagged))["owner"] == "alice"
