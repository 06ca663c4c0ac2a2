"""`jobkit serve --webhooks`: the API's process also sends the outbox, from its lifespan."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from jobkit.backends import from_url
from jobkit.errors import ConfigError
from jobkit.serve import ServeConfig, app
from tests.webhooks.conftest import SECRET, end_jobs, verify
from tests.webhooks.receiver import Receiver


def test_serve_sends_the_outbox_while_it_runs(tmp_path: Path, receiver: Receiver,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def fill() -> None:
        b = from_url(url)
        await b.open()
        try:
            await end_jobs(b, "hooks", receiver.url)
        finally:
            await b.close()

    asyncio.run(fill())
    monkeypatch.setenv("JOBKIT_WEBHOOK_SECRET", SECRET)
    with TestClient(app(ServeConfig(url=url, webhooks=True, webhook_allow=("127.0.0.1",)))) as client:
        assert client.get("/health").status_code in (200, 503)
        [got] = receiver.wait_for(1)
    verify(got)
    assert json.loads(got.body)["data"]["id"] == "j0"


def test_serve_with_webhooks_and_no_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBKIT_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="JOBKIT_WEBHOOK_SECRET"):
        app(ServeConfig(url="memory://", webhooks=True))
