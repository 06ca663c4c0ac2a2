"""The error policy of every call, against the loopback server's faults: what is retried, what waits, what fails the
item, what stops the batch; and that every attempt's tokens and cost are counted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import FAST, batch, llm, price, rows

__all__ = ["llm"]


async def run(backend: Backend, **kw: object) -> jobkit.jobs.BatchReport:
    return await jobkit.run(jobkit.jobs.ai_batch, batch(**kw), backend=backend, timeout=60)  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["500", "503", "malformed", "reset", "slow"])
async def test_transient_faults_are_retried_and_counted(memory: Backend, llm: FakeLLM, file_roots: Path,
                                                        fault: str) -> None:
    llm.when("term-1", fault, times=2, seconds=2.0)  # "slow": 2 s, past the 0.5 s timeout
    report = await run(memory, n=3, request_timeout=0.5)
    assert report.items_ok == 3 and report.items_failed == 0
    assert report.calls == 5, "two failed attempts and the third for term-1"
    assert [r[0] for r in rows(file_roots / "out.db")] == ["term-0", "term-1", "term-2"]
    billed_unknown = fault in ("malformed", "reset", "slow")  # the provider may have done the work: worst case
    if billed_unknown:
        assert report.cost > llm.cost(price) if fault != "slow" else report.cost >= llm.cost(price)
    else:
        assert report.cost == pytest.approx(llm.cost(price), rel=1e-6)


async def test_three_attempts_then_the_item_fails_and_the_batch_goes_on(memory: Backend, llm: FakeLLM) -> None:
    llm.when("term-1", "500")
    report = await run(memory, n=3)
    assert (report.items_ok, report.items_failed) == (2, 1)
    [error] = report.errors
    assert (error.key, error.section, error.status) == ("term-1", "intro", 500)
    assert "attempt 3 of 3" in error.message and report.calls == 5


@pytest.mark.parametrize("status", ["400", "404"])
async def test_a_refused_request_fails_its_item_without_retrying(memory: Backend, llm: FakeLLM, status: str) -> None:
    llm.when("term-0", status)
    report = await run(memory, n=2)
    assert (report.items_ok, report.items_failed, report.calls) == (1, 1, 2)
    assert report.errors[0].status == int(status)


async def test_on_error_fail_stops_at_the_first_failed_item(memory: Backend, llm: FakeLLM, file_roots: Path) -> None:
    llm.when("term-2", "400")
    with pytest.raises(jobkit.JobFailed, match="item 'term-2', section 'intro' failed: HTTP 400") as failed:
        await run(memory, n=3, on_error="fail", concurrency=1, batch_size=1)
    assert failed.value.job.attempts == 1, "not retried: Unrecoverable"
    assert [r[0] for r in rows(file_roots / "out.db")] == ["term-0", "term-1"], "results before it stay"


async def test_over_max_errors_stops_the_batch(memory: Backend, llm: FakeLLM) -> None:
    llm.when("term", "400")
    with pytest.raises(jobkit.JobFailed, match="over max_errors=2"):
        await run(memory, n=5, max_errors=2, concurrency=1)


@pytest.mark.parametrize("fault", ["401", "403", "quota"])
async def test_a_refused_key_or_account_stops_the_batch_at_once(memory: Backend, llm: FakeLLM, fault: str) -> None:
    llm.when("term", fault)
    with pytest.raises(jobkit.JobFailed, match="fix the key or the account") as failed:
        await run(memory, n=20, concurrency=2)
    assert failed.value.job.attempts == 1 and llm.calls <= 3, "no item after the refusal is sent"


async def test_a_429_waits_and_spends_no_attempt(memory: Backend, llm: FakeLLM) -> None:
    """Five 429s in a row (Retry-After 0.2 s), then an answer: more 429s than attempts, and the item still passes."""
    llm.fail_next("429", times=5, seconds=0.2)
    started = time.monotonic()
    report = await run(memory, n=1)
    assert report.items_ok == 1 and report.calls == 6 and llm.statuses[429] == 5
    assert time.monotonic() - started >= 5 * 0.2, "each 429's Retry-After was waited out"
    assert report.cost == pytest.approx(llm.cost(price), rel=1e-6), "a 429 is not billed"


async def test_a_429_without_headers_backs_off(memory: Backend, llm: FakeLLM) -> None:
    llm.fail_next("429-bare", times=4)
    report = await run(memory, n=1, retry={**FAST, "attempts": 2})
    assert report.items_ok == 1 and llm.statuses[429] == 4, "four waits, though only two attempts are allowed"


async def test_429s_past_max_rate_wait_fail_the_item(memory: Backend, llm: FakeLLM) -> None:
    llm.when("term-0", "429", seconds=0.2)
    report = await run(memory, n=1, retry={**FAST, "max_rate_wait": 0.5})
    assert report.items_failed == 1 and "kept refusing" in report.errors[0].message


async def test_output_that_never_validates_is_reasked_then_fails(memory: Backend, llm: FakeLLM) -> None:
    llm.when("term-0", "invalid")
    report = await run(memory, n=2, max_reasks=2, sections={"meta": {"prompt": "Describe {term}",
                                                                       "response_model": "Blurb"}})
    assert (report.items_ok, report.items_failed) == (1, 1)
    assert "never matched Blurb after 3 tries" in report.errors[0].message
    assert report.calls == 4 and llm.statuses[200] == 4, "three tries for term-0, one for term-1"
    assert report.tokens_in == sum(b.prompt_tokens for b in llm.billed), "every re-ask's tokens are counted"
    assert len({b.prompt_tokens for b in llm.billed}) == 3, "each re-ask sends the conversation grown by one turn"


async def test_a_reask_that_validates_passes(memory: Backend, llm: FakeLLM) -> None:
    llm.when("term-0", "invalid", times=1)
    report = await run(memory, n=1, sections={"meta": {"prompt": "Describe {term}", "response_model": "Blurb"}})
    assert report.items_ok == 1 and report.calls == 2
    assert report.cost == pytest.approx(llm.cost(price), rel=1e-6)


async def test_an_item_without_a_template_field_fails_alone(memory: Backend, llm: FakeLLM) -> None:
    payload = batch(2)
    payload["items"][1] = {"term": "term-1", "other": 1}
    payload["sections"] = {"intro": {"prompt": "{term} {other}"}}
    report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=memory, timeout=60)
    assert (report.items_ok, report.items_failed) == (1, 1) and "no field 'other'" in report.errors[0].message
