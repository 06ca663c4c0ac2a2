"""A payload is untrusted: it names a configured provider, registered models and sinks, paths inside the file roots,
never a URL, a key or a module; bad payloads are refused with a message that says what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs.ai import configure_provider
from jobkit.jobs.ai.prompts import compile_template
from jobkit.jobs.ai.providers import forget_providers, get_provider
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import batch, llm

__all__ = ["llm"]


@pytest.mark.parametrize(("change", "message"), [
    ({"base_url": "http://evil.example/v1"}, "Extra inputs are not permitted"),
    ({"api_key": "sk-stolen"}, "Extra inputs are not permitted"),
    ({"sections": {"key": {"prompt": "x"}}}, "section name 'key'"),
    ({"sections": {}}, "at least 1 item"),
    ({"source": {"kind": "jsonl", "path": "x.jsonl"}}, "one of the two"),
    ({"sink": "out.db"}, "a sink is a URL"),
    ({"concurrency": 0}, "greater than or equal to 1"),
    ({"cost_limit": -1}, "greater than or equal to 0"),
    ({"keep": ["intro"]}, "names of sections"),
])
async def test_bad_payloads_are_refused_at_enqueue(memory: Backend, change: dict[str, Any], message: str) -> None:
    with pytest.raises(jobkit.PayloadError, match=message):
        await jobkit.submit(jobkit.jobs.ai_batch, batch(2, **change), backend=memory)
    assert await memory.list("default") == []


@pytest.mark.parametrize(("change", "message"), [
    ({"provider": "elsewhere"}, "provider 'elsewhere' is not configured"),
    ({"response_model": "os:system"}, "response model 'os:system' is not registered"),
    ({"sink": "sqlite:////etc/out.db?table=t"}, "outside the file roots"),
    ({"sink": "jsonl:///../escape.jsonl"}, "outside the file roots"),
    ({"sink": "ftp://x"}, "unknown sink"),
    ({"sink": "python:not_registered"}, "python sink 'not_registered' is not registered"),
    ({"sections": {"intro": {"prompt": "{term.__class__}"}}}, "is not a plain name"),
    ({"sections": {"intro": {"prompt": "{0}"}}}, "is not a plain name"),
    ({"template": "jinja2", "sections": {"intro": {"prompt": "{% if %}"}}}, "does not compile"),
    ({"source": {"kind": "sqlite", "path": "/etc/passwd", "table": "t"}, "items": None}, "outside the file roots"),
])
async def test_what_a_payload_names_is_checked_before_any_call(memory: Backend, llm: FakeLLM, change: dict[str, Any],
                                                               message: str) -> None:
    with pytest.raises(jobkit.JobFailed, match=message) as failed:
        await jobkit.run(jobkit.jobs.ai_batch, batch(2, **change), backend=memory, timeout=30)
    assert failed.value.job.attempts == 1 and llm.calls == 0


def test_format_templates_fill_plain_names_only() -> None:
    assert compile_template("About {term!r:>12}", "format")({"term": "x"}) == "About          'x'"
    assert compile_template("{{literal}} {term}", "format")({"term": "x"}) == "{literal} x"


def test_the_default_provider_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    forget_providers()
    monkeypatch.setenv("JOBKIT_AI_BASE_URL", "http://127.0.0.1:11434/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.delenv("JOBKIT_AI_REQUESTS_PER_MINUTE", raising=False)
    p = get_provider("default")
    assert (p.base_url, p.requests_per_minute, p.tokens_per_minute) == ("http://127.0.0.1:11434/v1", 50, None)
    assert p.auth_headers() == {"Authorization": "Bearer sk-from-env"}
    assert "sk-from-env" not in repr(p)


def test_a_provider_may_limit_the_models_a_payload_names(llm: FakeLLM) -> None:
    configure_provider("default", base_url=llm.base_url, models=["gpt-4o-mini"])
    with pytest.raises(jobkit.Unrecoverable, match="model 'gpt-5' is not allowed"):
        get_provider("default").check_model("gpt-5")
    with pytest.raises(jobkit.ConfigError, match="not an http"):
        configure_provider("x", base_url="file:///etc/passwd")


async def test_the_key_comes_from_the_worker_and_a_wrong_one_is_refused(memory: Backend, llm: FakeLLM,
                                                                        file_roots: Path) -> None:
    configure_provider("default", base_url=llm.base_url, api_key_env="JOBKIT_TEST_NO_SUCH_KEY")
    with pytest.raises(jobkit.JobFailed, match="HTTP 401 from the provider: Incorrect API key"):
        await jobkit.run(jobkit.jobs.ai_batch, batch(2), backend=memory, timeout=30)


def test_the_ai_package_surface_and_import_cost() -> None:
    """`import jobkit.jobs` (enough to enqueue) loads no HTTP client, template engine or server."""
    import subprocess
    import sys

    code = ("import sys, jobkit, jobkit.jobs, jobkit.jobs.ai; print(sorted(m for m in sys.modules if m.split('.')[0]"
            " in {'httpx', 'httpx2', 'genai_prices', 'jinja2', 'starlette', 'uvicorn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    import jobkit.jobs.ai as ai

    assert ai.__all__ == sorted(ai.__all__) and all(hasattr(ai, n) for n in ai.__all__)
    assert issubclass(ai.AISetupError, jobkit.Unrecoverable) and issubclass(ai.ProviderRefused, jobkit.Unrecoverable)


async def test_two_items_with_one_key_are_refused(memory: Backend, llm: FakeLLM) -> None:
    payload = batch(3)
    payload["items"][2] = {"term": "term-0"}
    with pytest.raises(jobkit.JobFailed, match="items 0 and 2 have the same key 'term-0'"):
        await jobkit.run(jobkit.jobs.ai_batch, payload, backend=memory, timeout=30)
