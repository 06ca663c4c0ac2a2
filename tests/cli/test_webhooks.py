"""`jobkit webhooks list|replay|secret|run` on a real SQLite file, against a real receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from jobkit.backends import from_url
from jobkit.models import JobState
from jobkit.serve._signing import load_secret
from tests.webhooks.conftest import SECRET, end_jobs, verify
from tests.webhooks.conftest import receiver as receiver
from tests.webhooks.receiver import Receiver

from .conftest import Ran

Cli = Callable[..., Ran]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hooked(tmp_path: Path, receiver: Receiver) -> str:
    """A database whose queue "hooks" holds one failed job's delivery to the receiver."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def fill() -> None:
        b = from_url(url)
        await b.open()
        try:
            await end_jobs(b, "hooks", receiver.url, state=JobState.FAILED)
        finally:
            await b.close()

    asyncio.run(fill())
    return url


def test_list_shows_the_deliveries_and_replay_makes_one_pending(cli: Cli, hooked: str) -> None:
    ran = cli("webhooks", "list", "--queue", "hooks", "--url", hooked, "--json")
    assert ran.code == 0, ran.err
    [d] = json.loads(ran.out)
    assert (d["id"], d["state"], d["event"], d["job_id"]) == ("1", "pending", "job.failed", "j0")
    ran = cli("webhooks", "list", "--queue", "hooks", "--url", hooked, "--state", "dead")
    assert ran.code == 0 and ran.out == ""
    ran = cli("webhooks", "replay", "1", "--queue", "hooks", "--url", hooked)
    assert ran.code == 0 and "pending again (webhook-id hooks:j0:1)" in ran.out
    ran = cli("webhooks", "replay", "7", "--queue", "hooks", "--url", hooked)
    assert ran.code == 2 and "no webhook delivery '7' in queue 'hooks'" in ran.err
    ran = cli("webhooks", "list", "--url", hooked)
    assert ran.code == 2 and "needs one --queue" in ran.err


def test_secret_makes_a_usable_secret(cli: Cli) -> None:
    ran = cli("webhooks", "secret")
    assert ran.code == 0 and len(load_secret(ran.out.strip())) == 32


def test_run_without_a_secret_says_how_to_make_one(cli: Cli, hooked: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBKIT_WEBHOOK_SECRET", raising=False)
    ran = cli("webhooks", "run", "--url", hooked)
    assert ran.code == 2 and "JOBKIT_WEBHOOK_SECRET" in ran.err and "jobkit webhooks secret" in ran.err


def test_run_sends_until_sigterm(hooked: str, receiver: Receiver) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "jobkit", "webhooks", "run", "--url", hooked, "--allow",
                             "127.0.0.1"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        [got] = receiver.wait_for(1)
        verify(got)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()

    async def state() -> str:  # the sender's pass (POST, then the answer recorded) ended before it exited
        b = from_url(hooked)
        await b.open()
        try:
            [d] = await b.webhook_deliveries("hooks")
            return d.state
        finally:
            await b.close()

    assert asyncio.run(state()) == "delivered"
