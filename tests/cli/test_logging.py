"""`jobkit worker --log-level DEBUG` shows jobkit's debug lines, never a job's payload or result: other libraries
(aiosqlite logs every call with its arguments) stay at WARNING unless --log-all asks for them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import jobkit

ROOT = Path(__file__).resolve().parents[2]
SECRET = "PAYLOAD-7f3a91"
ANSWER = "RESULT-" + SECRET[::-1]


async def add_and_await(url: str) -> str:
    """Add the job, then wait (bounded) for the worker subprocess to complete it; returns its result."""
    queue = jobkit.Queue("cli-logs", backend=url)
    backend = await queue.backend()
    events = await backend.subscribe("cli-logs")
    try:
        job = await queue.add("cli.echo", {"secret": SECRET})

        async def finished() -> None:
            async for ev in events:
                if ev.job_id == job.id and ev.event in ("completed", "failed"):
                    return

        await asyncio.wait_for(finished(), 30)
        done = await backend.get("cli-logs", job.id)
        assert done is not None and done.state is jobkit.JobState.COMPLETED, done
        return str(done.result)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await backend.close()


def run_worker(tmp_path: Path, *flags: str) -> str:
    """A real `jobkit worker` on a SQLite file: one job through it, then SIGTERM; returns all it printed."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBKIT_", "REDIS_URL"))}
    proc = subprocess.Popen([sys.executable, "-m", "jobkit", "worker", "tests.cli.tasks", "--url", url, *flags],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert asyncio.run(add_and_await(url)) == ANSWER
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


@pytest.mark.timeout(90)
def test_debug_logs_never_show_payloads_or_results(tmp_path: Path) -> None:
    out = run_worker(tmp_path, "--log-level", "DEBUG")
    assert re.search(r"DEBUG jobkit\.worker: job \w+ \(cli\.echo\) attempt 1 started", out), out
    assert "INFO jobkit.task: working on job" in out  # the task's own logger, under jobkit
    assert SECRET not in out and SECRET[::-1] not in out, out
    assert " aiosqlite: " not in out and " asyncio: " not in out, out


@pytest.mark.timeout(90)
def test_prefetch_reaches_the_worker(tmp_path: Path) -> None:
    out = run_worker(tmp_path, "--prefetch", "3")
    started = r"INFO jobkit\.worker: worker \S+ started: .* concurrency=10 prefetch=3 backend=SQLiteBackend"
    assert re.search(started, out), out


@pytest.mark.timeout(90)
def test_log_all_lets_other_libraries_log_too(tmp_path: Path) -> None:
    out = run_worker(tmp_path, "--log-level", "DEBUG", "--log-all")
    assert "DEBUG aiosqlite: " in out  # asked for: their lines (which may carry payloads) are the user's choice


def test_no_jobkit_log_call_formats_a_payload_or_result() -> None:
    """A scan of jobkit's own log calls: none passes a job's data, result, payload or checkpoint."""
    calls = re.compile(r"\w*log\w*\.(?:debug|info|warning|error|exception|critical|log)\((?:[^()]|\([^()]*\))*\)",
                       re.S)
    leaks = re.compile(r"\.(?:data|result|payload|checkpoint)\b|\bpayload\b")
    seen = [(path.relative_to(ROOT), call) for path in (ROOT / "jobkit").rglob("*.py")
            for call in calls.findall(path.read_text())]
    assert len(seen) > 20  # the scan does find jobkit's log calls
    assert not [(path, call) for path, call in seen if leaks.search(call)]
