"""kill -9 a worker in the middle of a send: the resumed job sends the rest, and no recipient gets a message twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs
from jobkit.jobs import register_smtp_server
from jobkit.jobs.mail.testing import MailCatcher

pytest.importorskip("aiosmtpd")
ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import asyncio, sys
    import jobkit, jobkit.jobs
    jobkit.jobs.register_smtp_server("default", host="127.0.0.1", port=int(sys.argv[2]), security="none",
                                     sender="news@example.com")
    asyncio.run(jobkit.Worker([jobkit.jobs.send_email], backend=sys.argv[1], lease=1.0).run())
""")


async def test_sigkill_mid_send_then_resume_without_a_second_delivery(tmp_path: Path) -> None:
    addresses = [f"reader{i}@example.com" for i in range(6)]
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with MailCatcher() as smtp:
        smtp.hold.add(addresses[3])  # its message waits at the server: the worker is killed meanwhile
        smtp.reply(addresses[3], "451 4.3.0 connection lost before the message was accepted")
        worker = subprocess.Popen([sys.executable, str(script), url, str(smtp.port)], cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        backend = await jobkit.connect(url)
        try:
            job = await jobkit.Queue("default", backend=backend).add(jobkit.jobs.send_email, {
                "recipients": [{"to": a} for a in addresses], "subject": "Issue 7", "text": "Hello"})
            assert await asyncio.to_thread(smtp.holding.wait, 30), "the worker never reached the held recipient"
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            smtp.release.set()
            stored = await backend.get("default", job.id)
            assert stored is not None and stored.checkpoint["outcomes"] == "sss..."

            register_smtp_server("default", host="127.0.0.1", port=smtp.port, security="none",
                                 sender="news@example.com")
            runner = jobkit.Worker([jobkit.jobs.send_email], backend=backend, lease=1.0)
            task = asyncio.create_task(runner.run())
            try:
                done = await jobkit.JobHandle(job, backend, jobkit.jobs.send_email).wait(timeout=60)
            finally:
                runner.stop()
                await asyncio.wait_for(task, 30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
            await backend.close()
    assert done.state is jobkit.JobState.COMPLETED, done.error
    assert done.stalls == 1 and done.attempts == 2
    assert smtp.to(addresses) == dict.fromkeys(addresses, 1), "a recipient got two messages, or none"
    assert done.result["sent"] == 6

