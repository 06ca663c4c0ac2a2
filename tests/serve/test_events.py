"""GET /jobs/{id}/events on a real uvicorn: snapshot, progress and state as SSE, and resuming without loss."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import jobkit
from tests.conftest import Watch
from tests.serve import tasks
from tests.serve.conftest import Served, auth
from tests.serve.sse import Event, read_events


async def test_follow_a_job_then_resume_with_last_event_id(
    uvicorn_served: Served, watch: Callable[[jobkit.Backend, str], Watch]
) -> None:
    s = uvicorn_served
    gate = tasks.gates["sse"] = asyncio.Event()
    r = await s.client.post(f"/queues/{tasks.QUEUE}/jobs", headers=auth("admin"),
                            json={"task": "serve_tests.stepper", "payload": {"steps": 3, "gate": "sse"}})
    job_id = r.json()["id"]
    async with watch(s.backend, tasks.QUEUE) as seen, jobkit.Worker(
        [tasks.stepper], backend=s.backend, queues=[tasks.QUEUE], handle_signals=False
    ):
        first: list[Event] = []
        async with s.client.stream("GET", f"/jobs/{job_id}/events", headers=auth("admin")) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for ev in read_events(stream.aiter_lines()):
                first.append(ev)
                if ev.event == "snapshot":
                    gate.set()  # step 1 may go now that we listen
                if ev.event == "progress":
                    break  # the client drops the connection after step 1
        assert first[0].event == "snapshot" and first[0].data["id"] == job_id
        assert first[-1].data["percent"] > 33 and first[-1].id
        gate.set()
        await seen.until(lambda e: e.job_id == job_id and e.event == "progress" and e.progress is not None
                         and e.progress.percent > 60)  # step 2 happened while nobody listened
        gate.set()
        await seen.until(lambda e: e.job_id == job_id and e.event == "completed")
        resumed: list[Event] = []
        headers = {**auth("admin"), "Last-Event-ID": first[-1].id or ""}
        async with s.client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as stream:
            async for ev in read_events(stream.aiter_lines()):
                resumed.append(ev)
    messages = [ev.data["message"] for ev in resumed if ev.event == "progress"]
    assert messages == ["step 2", "step 3"]  # nothing lost, nothing repeated
    assert resumed[-1].event == "state" and resumed[-1].data["state"] == "completed"


async def test_a_finished_job_gives_its_snapshot_and_ends(uvicorn_served: Served) -> None:
    s = uvicorn_served
    job = await jobkit.Queue(tasks.QUEUE, backend=s.backend).add("serve_tests.echo", {"text": "x"})
    await s.backend.cancel(tasks.QUEUE, job.id, 0.0)
    async with s.client.stream("GET", f"/jobs/{job.id}/events?token=tok-admin") as stream:
        got = [ev async for ev in read_events(stream.aiter_lines())]
    assert [e.event for e in got] == ["snapshot"] and got[0].data["state"] == "cancelled"
    r = await s.client.get(f"/jobs/{job.id}/events")
    assert r.status_code == 401


async def test_timeout_ends_a_stream_and_pings_keep_it_alive(uvicorn_served: Served) -> None:
    s = uvicorn_served
    job = await jobkit.Queue(tasks.QUEUE, backend=s.backend).add("serve_tests.echo", {"text": "x"})
    lines: list[str] = []
    async with s.client.stream("GET", f"/jobs/{job.id}/events?timeout=1.5", headers=auth("admin")) as stream:
        lines = [line async for line in stream.aiter_lines()]
    assert any(line.startswith(": ping") for line in lines)  # ping_every=1 s in this fixture
    assert lines[0] == "event: snapshot"
