"""send_email beside the hand-written aiosmtplib loops users write today, against one SMTP server on loopback.

    python benchmarks/email_bench.py                  # 500 messages, 3 interleaved rounds, about a minute
    python benchmarks/email_bench.py --messages 2000 --rounds 5

The server is MailCatcher (aiosmtpd) in a process of its own, so it does not share the measured process's
interpreter lock. Each message: one recipient, a subject, a text and an HTML body from Jinja2 templates with the
recipient's own variables. Measured, in rounds (each contender once per round, the median reported):

- loop-reconnect: `aiosmtplib.send(message, ...)` per message: a new connection each (the snippet most guides show)
- loop-one-connection: one `aiosmtplib.SMTP` connection, `send_message` per message (what a careful hand-written
  loop does): no checkpoint, no shared rate, no retry, no report
- jobkit-memory / jobkit-sqlite / jobkit-redis: `await jobkit.run(send_email, payload)`: one connection, the shared
  rate taken per message (the server registered at 10^9/min so it never waits), a checkpoint saved per recipient,
  progress, the row-level report; the time from submit to the report

Ratio = the contender's messages/s ÷ loop-one-connection's; "client CPU" is this process's CPU time per message
(jobkit's own work included, the SMTP server's and Redis's excluded), steadier than wall time on a loaded machine.
Writes results/email-<UTC stamp>.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
import jinja2  # noqa: E402

import jobkit  # noqa: E402
import jobkit.jobs  # noqa: E402
from jobkit.run import shutdown  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SENDER = "bench@example.com"
SUBJECT = "{{ month }} report for {{ name }}"
TEXT = "Hello {{ name }},\n{{ tickets }} tickets in {{ month }}.\n"
HTML = "<p>Hello <b>{{ name }}</b>,</p><p>{{ tickets }} tickets in {{ month }}.</p>"

SERVER = textwrap.dedent("""
    import sys
    from jobkit.jobs.mail.testing import MailCatcher
    with MailCatcher() as smtp:
        print(smtp.port, flush=True)
        sys.stdin.read()
""")


class Served:
    """MailCatcher in a process of its own; `port` once it listens."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def people(n: int) -> list[dict[str, Any]]:
    return [{"to": f"user{i}@example.com", "name": f"User {i}", "context": {"tickets": i % 97}} for i in range(n)]


def hand_messages(n: int) -> list[EmailMessage]:
    """What a hand-written loop builds: render with Jinja2 (HTML autoescaped), one EmailMessage per recipient."""
    env = jinja2.Environment(autoescape=False)
    html_env = jinja2.Environment(autoescape=True)
    subject, text, html = env.from_string(SUBJECT), env.from_string(TEXT), html_env.from_string(HTML)
    out = []
    for r in people(n):
        ctx = {"month": "March", "name": r["name"], **r["context"]}
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = SENDER, r["to"], subject.render(ctx)
        msg.set_content(text.render(ctx))
        msg.add_alternative(html.render(ctx), subtype="html")
        out.append(msg)
    return out


async def loop_reconnect(port: int, n: int) -> float:
    started = time.perf_counter()
    for msg in hand_messages(n):
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, start_tls=False)
    return time.perf_counter() - started


async def loop_one_connection(port: int, n: int) -> float:
    started = time.perf_counter()
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    for msg in hand_messages(n):
        await smtp.send_message(msg)
    await smtp.quit()
    return time.perf_counter() - started


async def with_jobkit(url: str, n: int) -> float:
    payload = {"recipients": people(n), "subject": SUBJECT.replace("name", "recipient.name"),
               "text": TEXT.replace("name", "recipient.name"), "html": HTML.replace("name", "recipient.name"),
               "context": {"month": "March"}}
    backend = await jobkit.connect(url)
    try:
        if not backend.is_local:
            worker = jobkit.Worker([jobkit.jobs.send_email], backend=backend)
            runner = asyncio.create_task(worker.run())
        started = time.perf_counter()
        report = await jobkit.run(jobkit.jobs.send_email, payload, backend=backend, timeout=600)
        took = time.perf_counter() - started
        assert report.sent == n, report
        if not backend.is_local:
            worker.stop()
            await runner
        return took
    finally:
        await shutdown()
        await backend.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis", default=os.environ.get("JOBKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = ap.parse_args()
    server = Served()
    jobkit.jobs.register_smtp_server("default", host="127.0.0.1", port=server.port, security="none", sender=SENDER,
                                     per_minute=10**9)
    n = args.messages
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}  # this process's CPU seconds: the client's own cost, steadier under load
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {
            "loop-reconnect": lambda: loop_reconnect(server.port, n),
            "loop-one-connection": lambda: loop_one_connection(server.port, n),
            "jobkit-memory": lambda: with_jobkit("memory://email-bench", n),
            "jobkit-sqlite": lambda: with_jobkit(f"sqlite:///{tmp}/jobs.db", n),
            "jobkit-redis": lambda: with_jobkit(args.redis, n),
        }
        try:
            for _ in range(args.rounds):
                for name, run in contenders.items():
                    cpu = time.process_time()
                    times.setdefault(name, []).append(await run())
                    cpus.setdefault(name, []).append(time.process_time() - cpu)
        finally:
            server.stop()
    base = n / statistics.median(times["loop-one-connection"])
    rows = []
    for name, ts in times.items():
        rate = n / statistics.median(ts)
        extra_ms = (statistics.median(ts) - statistics.median(times["loop-one-connection"])) / n * 1000
        rows.append({"contender": name, "messages": n, "median_s": round(statistics.median(ts), 3),
                     "ms_per_message_over_loop": round(extra_ms, 2),
                     "cpu_ms_per_message": round(statistics.median(cpus[name]) / n * 1000, 2),
                     "min_s": round(min(ts), 3), "max_s": round(max(ts), 3), "messages_per_s": round(rate, 1),
                     "ratio_vs_loop_one_connection": round(rate / base, 2)})
    load = os.getloadavg()[0]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    lines = [f"# send_email vs hand-written aiosmtplib loops ({n} messages, {args.rounds} rounds, load {load:.2f})",
             "", "| contender | median s | range s | messages/s | ratio vs one-connection loop | ms/message more |"
             " client CPU ms/message |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['contender']} | {r['median_s']} | {r['min_s']} to {r['max_s']} | {r['messages_per_s']} |"
              f" {r['ratio_vs_loop_one_connection']}x | {r['ms_per_message_over_loop']} | {r['cpu_ms_per_message']} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"email-{stamp}.md").write_text(text)
    (RESULTS / f"email-{stamp}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
