"""What the AI job tests share: a FakeLLM on loopback wired as the "default" provider, a response model, and the
price of the model they ask for (gpt-4o-mini, priced by genai-prices' table, cached input at half price)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from jobkit.jobs.ai import configure_provider, register_response_model
from jobkit.jobs.ai.prices import forget_prices, pricer
from jobkit.jobs.ai.providers import forget_providers, get_provider
from jobkit.jobs.ai.testing import FakeLLM

MODEL = "gpt-4o-mini"
FAST = {"attempts": 3, "backoff": {"kind": "fixed", "delay": 0.05}}  # the policy's shape, at test speed


@register_response_model
class Blurb(BaseModel):
    title: str
    words: int


def price(tokens_in: int, cached: int, tokens_out: int) -> float:
    return pricer(get_provider("default"), MODEL)(tokens_in, cached, tokens_out)


@contextlib.contextmanager
def default_provider(latency: float = 0.0) -> Iterator[FakeLLM]:
    """A fresh FakeLLM as the default provider, with room for fast tests (the defaults have a test of their own)."""
    with FakeLLM(latency=latency) as server:
        configure_provider("default", base_url=server.base_url, api_key="test-key", requests_per_minute=100_000)
        try:
            yield server
        finally:
            forget_providers()
            forget_prices()


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    """A fresh FakeLLM (no latency) as the default provider (see default_provider)."""
    with default_provider() as server:
        yield server


def batch(n: int = 5, **kw: Any) -> dict[str, Any]:
    """An ai_batch payload of `n` terms and one section, into a SQLite table."""
    payload: dict[str, Any] = {"items": [{"term": f"term-{i}"} for i in range(n)], "key": "term",
                               "sections": {"intro": {"prompt": "Write an intro about {term}"}}, "model": MODEL,
                               "sink": "sqlite:///out.db?table=gen", "retry": FAST}
    payload.update(kw)
    return payload


def rows(db: Path, table: str = "gen", columns: str = "key") -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(f"SELECT {columns} FROM {table} ORDER BY key").fetchall()
    conn.close()
    return found
