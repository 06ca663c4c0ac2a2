"""Completion webhooks: what the outbox costs a job's end, beside the way users do it today (a POST at the end of
the task), against one HTTP receiver on loopback.

    python benchmarks/webhooks_bench.py                    # 1000 jobs, 3 interleaved rounds
    python benchmarks/webhooks_bench.py --jobs 3000 --rounds 5 --redis redis://127.0.0.1:6379/14

The receiver (Starlette on uvicorn) runs in a process of its own. Per backend (memory, a SQLite file, Redis), a
Worker (concurrency 50) drains N jobs of a task that returns at once; measured from the first add to the last end:

- none: no webhook (the floor)
- outbox: `webhook=URL` on each job: its delivery is written by the step that ends the job; the POSTs are sent
  afterwards by a WebhookSender, timed apart ("sender": deliveries/s, each signed and recorded)
- inline: the task POSTs the result itself before returning (httpx, one kept-alive client): the job waits for
  the receiver, and nothing retries or records it

Ratio = jobs/s over none's jobs/s in the same round; medians of the rounds. Writes results/webhooks-<UTC>.md/.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jobkit  # noqa: E402
from jobkit.backends import Backend, from_url  # noqa: E402
from jobkit.serve import WebhookSender  # noqa: E402
from jobkit.serve.webhooks import http_client  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
_client: Any = None
_url = ""


@jobkit.task(name="bench.hooked")
async def hooked(ctx: jobkit.Context, n: int) -> dict[str, int]:
    return {"n": n}


@jobkit.task(name="bench.inline")
async def inline(ctx: jobkit.Context, n: int) -> dict[str, int]:
    result = {"n": n}
    res = await _client.post(_url, json={"type": "job.completed", "data": {"id": ctx.job.id, "result": result}})
    res.raise_for_status()
    return result


def serve(port: int) -> None:
    """The receiver process: 200 to every POST."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def hook(request: Request) -> Response:
        await request.body()
        return Response("ok")

    uvicorn.run(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), host="127.0.0.1", port=port,
                log_level="error", access_log=False)


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the receiver did not start in 20 s") from None
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/hook"


async def drain(backend: Backend, task: jobkit.Task[Any], n: int, webhook: str | None) -> float:
    """Seconds from the first add to the last job's end."""
    queue = f"bench-{task.name.split('.')[1]}-{time.monotonic_ns()}"
    q = jobkit.Queue(queue, backend=backend)
    start = time.perf_counter()
    async with jobkit.Worker([task], backend=backend, queues=[queue], concurrency=50, handle_signals=False):
        jobs = await q.add_bulk(task, list(range(n)), webhook=webhook)
        for job in jobs:
            await jobkit.JobHandle(job, backend, task).result(timeout=300)
    took = time.perf_counter() - start
    if webhook:
        drain.last_queue = queue  # type: ignore[attr-defined]
    return took


async def send(backend: Backend, queue: str, n: int) -> float:
    sender = WebhookSender(backend, secret=SECRET, allow=["127.0.0.1"], queues=[queue], batch=50)
    start = time.perf_counter()
    sent = 0
    try:
        while sent < n:
            sent += await sender.send_due()
    finally:
        await sender.aclose()
    took = time.perf_counter() - start
    delivered = await backend.webhook_deliveries(queue, state="delivered", limit=n)
    assert len(delivered) == n, f"{len(delivered)} of {n} delivered"
    return took


async def round_for(url: str, n: int, hook: str) -> dict[str, float]:
    backend = from_url(url)
    await backend.open()
    try:
        out = {"none": n / await drain(backend, hooked, n, None),
               "outbox": n / await drain(backend, hooked, n, hook)}
        out["sender"] = n / await send(backend, drain.last_queue, n)  # type: ignore[attr-defined]
        out["inline"] = n / await drain(backend, inline, n, None)
        return out
    finally:
        await backend.close()


async def main() -> None:
    global _client, _url
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--redis", default=os.environ.get("JOBKIT_BENCH_REDIS", "redis://127.0.0.1:6379/14"))
    args = p.parse_args()
    proc, _url = start_receiver()
    _client = http_client(10.0)
    tmp = tempfile.mkdtemp()
    urls = {"memory": "memory://bench", "sqlite": f"sqlite:///{tmp}/bench.db", "redis": args.redis}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in urls}
    try:
        for _ in range(args.rounds):
            for name, url in urls.items():
                runs[name].append(await round_for(url, args.jobs, _url))
    finally:
        await _client.aclose()
        proc.terminate()
        proc.wait(timeout=10)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    table = ["| backend | none jobs/s | outbox jobs/s (ratio) | inline POST jobs/s (ratio) | sender deliveries/s |",
             "|---|---|---|---|---|"]
    summary: dict[str, dict[str, float]] = {}
    for name, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        ratios = [{k: r[k] / r["none"] for k in ("outbox", "inline")} for r in rows]
        med_ratio = {k: statistics.median(r[k] for r in ratios) for k in ("outbox", "inline")}
        summary[name] = {**med, **{f"{k}_ratio": v for k, v in med_ratio.items()}}
        table.append(f"| {name} | {med['none']:.0f} | {med['outbox']:.0f} ({med_ratio['outbox']:.2f}x) |"
                     f" {med['inline']:.0f} ({med_ratio['inline']:.2f}x) | {med['sender']:.0f} |")
    head = (f"# webhooks bench {stamp}\n\n{args.jobs} jobs per contender, {args.rounds} rounds (medians), worker"
            f" concurrency 50, {os.cpu_count()} CPUs; receiver on loopback in its own process.\n\n")
    text = head + "\n".join(table) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"webhooks-{stamp}.md").write_text(text)
    (RESULTS / f"webhooks-{stamp}.json").write_text(json.dumps({"jobs": args.jobs, "runs": runs, "summary": summary},
                                                               indent=1))
    print(text)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        asyncio.run(main())
