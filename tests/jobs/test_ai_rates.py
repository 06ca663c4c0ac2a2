"""Rate limits: the provider's x-ratelimit-* headers hold every call back before it would be refused; and the
production defaults (50 requests/min, 3 attempts 10 s apart) as they run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs.ai import configure_provider
from jobkit.jobs.ai.providers import forget_providers
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import batch, rows


@pytest.mark.parametrize("headers", [True, False])
async def test_the_providers_remaining_count_holds_calls_back(memory: Backend, file_roots: Path,
                                                              headers: bool) -> None:
    """The server allows 4 requests per 1.5 s, we believe in 600/min: its headers stop us before it refuses."""
    with FakeLLM(requests_per_minute=4, window=1.5, limit_headers=headers) as llm:
        configure_provider("default", base_url=llm.base_url, api_key="test-key", requests_per_minute=600)
        try:
            report = await jobkit.run(jobkit.jobs.ai_batch, batch(10, concurrency=1), backend=memory, timeout=60)
        finally:
            forget_providers()
    assert report.items_ok == 10 and len(rows(file_roots / "out.db")) == 10
    if headers:
        assert llm.statuses[429] == 0, "remaining 0 with its reset was waited out before asking"
    else:
        assert llm.statuses[429] > 0, "without the headers, only refusals tell"


@pytest.mark.slow
async def test_production_defaults_fifty_a_minute_and_ten_second_retries(memory: Backend, file_roots: Path) -> None:
    """The seeds' policy as shipped: the default provider (50/min, spread as at most 9 per 10 s), the default retry
    (3 attempts, 10 s apart, jittered); the server allows exactly 50/min and never has to refuse."""
    with FakeLLM(requests_per_minute=50) as llm:
        configure_provider("default", base_url=llm.base_url, api_key="test-key")  # default limits
        llm.when("term-3", "500", times=1)
        payload = batch(12)
        del payload["retry"]  # the default: 3 attempts, 10 s
        started = time.time()
        try:
            report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=memory, timeout=120)
        finally:
            forget_providers()
    took = time.time() - started
    assert report.items_ok == 12 and report.calls == 13 and llm.statuses[429] == 0
    first = llm.accepted[0]  # arrival times carry the loopback's jitter: a tenth of a second of slack
    assert sum(1 for t in llm.accepted if t < first + 9.9) <= 9, "a minute's 50 calls are spread, not sent at once"
    assert took >= 10 * 0.7, "the 500 was retried after the default backoff (10 s, jitter 30%)"
