"""ai_batch in mode="batch_api" against FakeLLM's Batch API on loopback: JSONL upload, polling, half price, the
budget reserved per batch, one batch per job however often it is retried, expired and cancelled batches, and
hostile output files."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs.ai import configure_provider, set_price
from jobkit.jobs.ai.prices import Price
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import MODEL, batch, llm, price, rows
from .test_ai_processes import Workers

__all__ = ["llm"]

DEAR = Price(input=1000.0, output=1000.0)  # as tests/jobs/ai_worker.py prices "dear-model"
FAST_POLL = 0.02


def api(n: int = 5, **kw: Any) -> dict[str, Any]:
    return batch(n, mode="batch_api", poll_interval=FAST_POLL, **kw)


async def until(backend: Backend, job_id: str, ready: Callable[[jobkit.Job], bool], timeout: float = 20.0,
                ) -> jobkit.Job:
    """Poll the job (bounded) until `ready(job)`."""
    async def poll() -> jobkit.Job:
        while True:
            job = await backend.get("default", job_id)
            assert job is not None
            if ready(job):
                return job
            assert not job.finished, job.error
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


def extra(job: jobkit.Job) -> dict[str, Any]:
    return job.progress.extra if job.progress is not None else {}


def batch_created(job: jobkit.Job) -> bool:
    return bool(job.checkpoint and any(b["batch_id"] for b in job.checkpoint["batches"]))


async def test_structured_output_into_sqlite_at_half_price(any_backend: Backend, llm: FakeLLM,
                                                          file_roots: Path) -> None:
    llm.batches.hold.clear()  # the batch stays in_progress until the test has seen it so
    payload = api(4, keep=["term"], sections={
        "intro": {"prompt": "Write an intro about {term}"},
        "meta": {"prompt": "Describe {term}", "response_model": "Blurb"}})
    handle = await jobkit.submit(jobkit.jobs.ai_batch, payload, backend=any_backend)
    result = asyncio.ensure_future(handle.result(timeout=30))
    seen = await until(any_backend, handle.id, lambda j: extra(j).get("batch_status") == "in_progress")
    assert extra(seen)["requests_total"] == 8 and extra(seen)["cost_reserved"] > 0
    llm.batches.hold.set()
    report = await result

    assert (report.items_total, report.items_ok, report.items_failed, report.items_left) == (4, 4, 0, 0)
    assert llm.calls == 0 and llm.batches.uploads == 1 and llm.batches.created == 1, "one batch, no live call"
    found = rows(file_roots / "out.db", columns="key, term, intro, meta, model, tokens_in, tokens_out, cost")
    assert [r[0] for r in found] == [f"term-{i}" for i in range(4)]
    _, term, intro, meta, model, tokens_in, tokens_out, cost = found[0]
    assert cost > 0
    assert term == "term-0" and intro == "Generated text for: Write an intro about term-0" and model == MODEL
    assert json.loads(meta) == {"title": "title of Describe term-0", "words": 1}
    assert all(b.batch for b in llm.billed) and report.calls == len(llm.billed) == 8
    assert report.tokens_in == sum(b.prompt_tokens for b in llm.billed) and tokens_in > 0 and tokens_out > 0
    live = sum(price(b.prompt_tokens, b.cached_tokens, b.completion_tokens) for b in llm.billed)
    assert report.cost == pytest.approx(live / 2, rel=1e-6), "genai-prices' batch price: half"
    assert report.cost == pytest.approx(llm.cost(price), rel=1e-6), "what the server billed"
    assert sum(r[-1] for r in found) == pytest.approx(report.cost, rel=1e-6)
    job = await any_backend.get("default", handle.id)
    assert job is not None and job.checkpoint["batches"] == [], "the collected batch left the checkpoint"


async def test_the_request_file_holds_one_line_per_item_and_section(memory: Backend, llm: FakeLLM) -> None:
    payload = api(2, items=[{"term": "a/b%2F"}, {"term": "a"}], temperature=0.3, max_tokens=77, sections={
        "intro": {"prompt": "About {term}"}, "meta": {"prompt": "Describe {term}", "response_model": "Blurb"}})
    report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=memory, timeout=30)
    assert report.items_ok == 2
    [upload] = [data for data in llm.batches.files.values() if b'"method"' in data]
    lines = [json.loads(x) for x in upload.splitlines()]
    assert [x["custom_id"] for x in lines] == ["a%2Fb%252F/intro", "a%2Fb%252F/meta", "a/intro", "a/meta"]
    assert {x["url"] for x in lines} == {"/v1/chat/completions"} and {x["method"] for x in lines} == {"POST"}
    body = lines[1]["body"]
    assert body["model"] == MODEL and body["max_tokens"] == 77 and body["temperature"] == 0.3
    assert body["response_format"]["type"] == "json_schema"
    assert body["messages"] == [{"role": "user", "content": "Describe a/b%2F"}]


async def test_a_large_batch_is_split_at_the_request_limit(memory: Backend, llm: FakeLLM, file_roots: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jobkit.jobs.ai.batch_files.MAX_REQUESTS", 3)
    report = await jobkit.run(jobkit.jobs.ai_batch, api(7), backend=memory, timeout=30)
    assert report.items_ok == 7 and llm.batches.created == 3
    assert sorted(len(f.splitlines()) for f in llm.batches.files.values() if b'"method"' in f) == [1, 3, 3]
    assert len(rows(file_roots / "out.db")) == 7


async def test_only_what_fits_in_the_cost_limit_is_submitted(any_backend: Backend, llm: FakeLLM,
                                                             file_roots: Path) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output)  # batch: half that
    payload = api(30, model="dear-model", max_tokens=50, cost_limit=0.5)
    report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=any_backend, timeout=30)
    billed = llm.cost(DEAR.cost)
    [requests] = [len(f.splitlines()) for f in llm.batches.files.values() if b'"method"' in f]
    assert report.stopped == "cost_limit" and 0 < report.items_ok == requests < 30
    assert billed <= 0.5 and report.cost == pytest.approx(billed), "never past the limit"
    assert report.items_left == 30 - requests and report.resume_hint is not None

    first_id = report.resume_hint.split("resume=")[1].split("'")[1]
    final = await jobkit.run(jobkit.jobs.ai_batch, {**payload, "cost_limit": 10.0, "resume": first_id},
                             backend=any_backend, timeout=30)
    assert final.stopped is None and final.items_ok == 30 and llm.batches.created == 2
    assert [r[0] for r in rows(file_roots / "out.db")] == sorted(f"term-{i}" for i in range(30))
    assert final.calls == len(llm.billed) == 30, "no item paid for twice"


async def test_nothing_is_submitted_when_no_item_fits(memory: Backend, llm: FakeLLM) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output)
    report = await jobkit.run(jobkit.jobs.ai_batch, api(3, model="dear-model", max_tokens=1000, cost_limit=0.2),
                              backend=memory, timeout=30)
    assert report.stopped == "cost_limit" and report.items_left == 3 and report.cost == 0
    assert llm.batches.uploads == 0 and llm.batches.created == 0


async def test_a_create_whose_answer_was_lost_is_found_not_sent_again(memory: Backend, llm: FakeLLM) -> None:
    llm.batches.lose_creates = 1
    report = await jobkit.run(jobkit.jobs.ai_batch, api(3), backend=memory, timeout=30)
    assert report.items_ok == 3 and llm.batches.created == 1 and len(llm.billed) == 3


async def test_batch_factor_set_with_the_price(memory: Backend, llm: FakeLLM) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output, batch_factor=0.25)
    report = await jobkit.run(jobkit.jobs.ai_batch, api(3, model="dear-model", cost_limit=None), backend=memory,
                              timeout=30)
    live = sum(DEAR.cost(b.prompt_tokens, b.cached_tokens, b.completion_tokens) for b in llm.billed)
    assert report.cost == pytest.approx(live * 0.25)


async def test_a_retried_attempt_polls_the_same_batch(memory: Backend, llm: FakeLLM, file_roots: Path) -> None:
    """The first attempt creates the batch, then its polls meet 500s past the attempts and it fails: the retry
    finds the batch in the checkpoint, polls it and uploads nothing."""
    llm.batches.fail_polls = 2
    job = await jobkit.Queue("default", backend=memory).add(
        jobkit.jobs.ai_batch, api(6, retry={"attempts": 2, "backoff": {"kind": "fixed", "delay": 0.01}}),
        backoff=jobkit.Backoff(kind="fixed", delay=0.05))
    done = await jobkit.JobHandle(job, memory, jobkit.jobs.ai_batch).wait(timeout=30)
    assert done.state is jobkit.JobState.COMPLETED and done.attempts == 2, done.error
    assert llm.batches.uploads == 1 and llm.batches.created == 1
    assert done.result["items_ok"] == 6 and len(rows(file_roots / "out.db")) == 6


@pytest.mark.slow
async def test_a_worker_killed_while_its_batch_runs_never_uploads_twice(tmp_path: Path) -> None:
    with FakeLLM() as server:
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        backend = await jobkit.connect(url)
        workers = Workers(url, server, tmp_path)
        server.batches.hold.clear()
        try:
            job = await jobkit.Queue("default", backend=backend).add(jobkit.jobs.ai_batch, api(
                20, model="dear-model", max_tokens=50, cost_limit=5.0))
            first = workers.spawn()
            await until(backend, job.id, batch_created)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            workers.spawn()
            server.batches.hold.set()
            done = await jobkit.JobHandle(job, backend, jobkit.jobs.ai_batch).wait(timeout=60)
            assert done.state is jobkit.JobState.COMPLETED and done.attempts == 2, done.error
            assert server.batches.uploads == 1 and server.batches.created == 1, "polled, not sent again"
            report = done.result
            assert report["items_ok"] == 20 and report["cost"] == pytest.approx(server.cost(DEAR.cost))
            assert report["cost_interrupted"] == 0, "the open batch's reservation was kept, not written off"
            with sqlite3.connect(tmp_path / "out.db") as conn:
                keys = sorted(k for (k,) in conn.execute("SELECT key FROM gen"))
            conn.close()
            assert keys == sorted(f"term-{i}" for i in range(20))
        finally:
            workers.stop()
            await backend.close()


async def test_an_expired_batch_keeps_what_ran_and_a_resume_sends_the_rest(memory: Backend, llm: FakeLLM,
                                                                           file_roots: Path) -> None:
    llm.batches.expire_after = 2
    report = await jobkit.run(jobkit.jobs.ai_batch, api(5), backend=memory, timeout=30)
    assert (report.items_ok, report.items_failed, report.items_left) == (2, 0, 3)
    assert report.stopped == "batch_ended" and report.resume_hint is not None and "3 items not run" in \
        report.resume_hint
    assert [r[0] for r in rows(file_roots / "out.db")] == ["term-0", "term-1"]
    assert report.cost == pytest.approx(llm.cost(price), rel=1e-6) and len(llm.billed) == 2

    llm.batches.expire_after = None
    first_id = report.resume_hint.split("resume=")[1].split("'")[1]
    final = await jobkit.run(jobkit.jobs.ai_batch, api(5, resume=first_id), backend=memory, timeout=30)
    assert final.items_ok == 5 and final.stopped is None and len(llm.billed) == 5
    [_, second] = [f for f in llm.batches.files.values() if b'"method"' in f]
    assert len(second.splitlines()) == 3, "only the items that did not run"
    assert [r[0] for r in rows(file_roots / "out.db")] == [f"term-{i}" for i in range(5)]


async def test_an_invalid_answer_is_reasked_live(memory: Backend, llm: FakeLLM, file_roots: Path) -> None:
    llm.when("term-1", "invalid", times=1)  # the batch's answer; the live re-ask then validates
    report = await jobkit.run(jobkit.jobs.ai_batch, api(3, sections={"meta": {"prompt": "Describe {term}",
                                                                             "response_model": "Blurb"}}),
                              backend=memory, timeout=30)
    assert report.items_ok == 3 and llm.calls == 1, "one live call: the re-ask"
    assert [b.batch for b in llm.billed].count(False) == 1
    assert report.cost == pytest.approx(llm.cost(price), rel=1e-6), "the re-ask at the live price"
    title = json.loads(rows(file_roots / "out.db", columns="meta")[1][0])["title"]
    assert title.startswith("title of Your answer did not match the required JSON schema"), "the re-ask's answer"


@pytest.mark.parametrize("on_error", ["skip", "fail"])
async def test_an_answer_that_never_validates_fails_by_on_error(memory: Backend, llm: FakeLLM, file_roots: Path,
                                                                on_error: str) -> None:
    llm.when("term-1", "invalid")
    payload = api(3, on_error=on_error, max_reasks=1, sections={"meta": {"prompt": "Describe {term}",
                                                                         "response_model": "Blurb"}})
    if on_error == "fail":
        with pytest.raises(jobkit.JobFailed, match="item 'term-1', section 'meta' failed: after the batch's answer"):
            await jobkit.run(jobkit.jobs.ai_batch, payload, backend=memory, timeout=30)
    else:
        report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=memory, timeout=30)
        assert (report.items_ok, report.items_failed) == (2, 1)
        assert report.errors[0].key == "term-1" and "never matched Blurb" in report.errors[0].message
    assert llm.calls == 1, "max_reasks=1: one live re-ask"
    assert [r[0] for r in rows(file_roots / "out.db")] == ["term-0", "term-2"], "paid results are kept"


async def test_cancelling_the_job_cancels_the_provider_batch(memory: Backend, llm: FakeLLM, file_roots: Path) -> None:
    llm.batches.hold_after = 2  # two lines run, then the batch waits
    llm.batches.hold.clear()
    handle = await jobkit.submit(jobkit.jobs.ai_batch, api(5), backend=memory)
    waiting = asyncio.ensure_future(handle.wait(timeout=30))
    await until(memory, handle.id, lambda j: extra(j).get("requests_completed") == 2)
    await handle.cancel()
    job = await waiting
    assert job.state is jobkit.JobState.CANCELLED
    assert llm.batches.cancels == 1 and [b.status for b in llm.batches.batches.values()] == ["cancelled"]
    assert [r[0] for r in rows(file_roots / "out.db")] == ["term-0", "term-1"], "what completed is collected"


async def test_hostile_and_malformed_output_lines(memory: Backend, llm: FakeLLM, file_roots: Path) -> None:
    llm.when("term-2", "malformed")
    llm.when("term-3", "400")
    llm.batches.garbage = [
        b"not json at all", b"[1, 2, 3]", b'{"custom_id": 5}',
        b'{"custom_id": "term-0/intro", "response": {"status_code": 200, "body": "a second answer"}}',
        b'{"custom_id": "../../etc/passwd/intro", "response": {"status_code": 200, "body": {"usage": '
        b'{"prompt_tokens": -5, "completion_tokens": "many"}}}}',
    ]
    report = await jobkit.run(jobkit.jobs.ai_batch, api(5), backend=memory, timeout=30)
    assert (report.items_ok, report.items_failed) == (3, 2)
    errors = {e.key: (e.message, e.status) for e in report.errors}
    assert errors["term-2"] == ("the provider's line for this request is not a chat completion", 200)
    assert errors["term-3"][1] == 400 and errors["term-3"][0].startswith("HTTP 400 from the provider: fault 400")
    assert [r[0] for r in rows(file_roots / "out.db")] == ["term-0", "term-1", "term-4"]
    assert rows(file_roots / "out.db", columns="intro")[0][0].startswith("Generated text"), "the first line wins"
    assert report.cost == pytest.approx(llm.cost(price), rel=1e-6), "hostile usage counts as nothing"


async def test_a_refused_batch_fails_its_items(memory: Backend, llm: FakeLLM) -> None:
    llm.batches.refuse = "model gpt-x does not support the batch API"
    report = await jobkit.run(jobkit.jobs.ai_batch, api(3), backend=memory, timeout=30)
    assert (report.items_ok, report.items_failed, report.cost) == (0, 3, 0)
    assert "the provider refused the batch: model gpt-x does not support the batch API (line 1)" in \
        report.errors[0].message


async def test_a_refused_key_stops_the_job_as_in_live_mode(memory: Backend, llm: FakeLLM) -> None:
    configure_provider("default", base_url=llm.base_url, api_key="wrong-key", requests_per_minute=100_000)
    with pytest.raises(jobkit.JobFailed, match="HTTP 401 from the provider: Incorrect API key.*fix the key") as failed:
        await jobkit.run(jobkit.jobs.ai_batch, api(3), backend=memory, timeout=30)
    assert failed.value.job.attempts == 1 and llm.batches.uploads == 0
