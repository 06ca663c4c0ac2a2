"""Money: the worst case is reserved before each call and settled after, so cost_limit is never passed, even with
calls in flight; an unknown price is refused; a stopped batch says where, and resumes from there."""

from __future__ import annotations

from pathlib import Path

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs.ai import set_price
from jobkit.jobs.ai.prices import Price
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import batch, llm, rows

__all__ = ["llm"]

DEAR = Price(input=1000.0, output=1000.0)  # $0.001 a token: an item costs about $0.02, its worst case about $0.09


async def test_the_cost_limit_is_never_passed_and_the_report_says_how_to_go_on(any_backend: Backend, llm: FakeLLM,
                                                                              file_roots: Path) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output)
    payload = batch(60, model="dear-model", max_tokens=50, cost_limit=0.5, concurrency=10)
    report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=any_backend, timeout=60)
    billed = llm.cost(DEAR.cost)
    assert report.stopped == "cost_limit" and 0 < report.items_ok < 60
    assert billed <= 0.5 and report.cost == pytest.approx(billed), "never past the limit, with 10 calls in flight"
    assert report.cost > 0.5 - 0.1, "stopped only when the next worst case no longer fit"
    assert report.items_left == 60 - report.items_ok and report.resume_hint is not None
    first_id = report.resume_hint.split("resume=")[1].split("'")[1]
    done = {r[0] for r in rows(file_roots / "out.db")}
    assert len(done) == report.items_ok

    more = {**payload, "cost_limit": 10.0, "resume": first_id}
    final = await jobkit.run(jobkit.jobs.ai_batch, more, backend=any_backend, timeout=60)
    assert final.stopped is None and final.items_ok == 60 and final.run == report.run
    keys = [r[0] for r in rows(file_roots / "out.db")]
    assert sorted(keys) == sorted(f"term-{i}" for i in range(60)), "every item exactly once"
    assert final.calls == llm.calls == 60, "no item paid for twice"


async def test_a_resume_must_be_the_same_batch(memory: Backend, llm: FakeLLM) -> None:
    first = await jobkit.submit(jobkit.jobs.ai_batch, batch(2), backend=memory)
    await first.result(timeout=30)
    with pytest.raises(jobkit.JobFailed, match="was a batch of other items"):
        await jobkit.run(jobkit.jobs.ai_batch, batch(3, resume=first.id), backend=memory, timeout=30)


async def test_a_model_without_a_price_is_refused_before_any_call(memory: Backend, llm: FakeLLM) -> None:
    with pytest.raises(jobkit.JobFailed, match="no price is known for model 'my-local-llama'") as failed:
        await jobkit.run(jobkit.jobs.ai_batch, batch(2, model="my-local-llama"), backend=memory, timeout=30)
    assert llm.calls == 0 and failed.value.job.attempts == 1
    set_price("my-local-llama", input=0, output=0)  # free, said explicitly
    report = await jobkit.run(jobkit.jobs.ai_batch, batch(2, model="my-local-llama"), backend=memory, timeout=30)
    assert report.items_ok == 2 and report.cost == 0.0


async def test_a_worst_case_over_the_limit_stops_before_calling(memory: Backend, llm: FakeLLM) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output)
    report = await jobkit.run(jobkit.jobs.ai_batch, batch(3, model="dear-model", max_tokens=1000, cost_limit=0.5),
                              backend=memory, timeout=30)
    assert report.stopped == "cost_limit" and report.items_ok == 0 and llm.calls == 0 and report.cost == 0


async def test_ai_generate_refuses_a_call_whose_worst_case_is_over_the_limit(memory: Backend, llm: FakeLLM) -> None:
    set_price("dear-model", input=DEAR.input, output=DEAR.output)
    with pytest.raises(jobkit.JobFailed, match="leaves no room for this call"):
        await jobkit.run(jobkit.jobs.ai_generate, {"model": "dear-model", "prompt": "hi", "cost_limit": 0.1},
                         backend=memory, timeout=30)
    assert llm.calls == 0
