"""AI batch: jobkit's call path beside direct calls with the same client, the shared rate limit saturated by two
worker processes, and 10,000 items end to end with a sink, memory watched. Everything against FakeLLM on loopback.

    python benchmarks/ai_batch_bench.py                       # all three, about 4 minutes on 2 cores
    python benchmarks/ai_batch_bench.py --only overhead --calls 2000
    python benchmarks/ai_batch_bench.py --only saturation --backend redis://127.0.0.1:6379/14

- overhead: N sequential calls at 0 and 20 ms server latency, interleaved in rounds: `client.post` + JSON decode
  (direct, what a hand-written loop does), then jobkit's `Caller.generate` on the same client kind (reserve the
  worst-case cost, take the shared rate, call, settle, check the provider's headers) on memory://, sqlite:/// and
  Redis. Overhead = jobkit's percentile - direct's. Target: p95 overhead < 1 ms.
- saturation: the server allows 600 requests/min (sliding 60 s window, its own clock); two worker processes run a
  batch each at concurrency 8 with the provider at 600/min, for 2 minutes. Achieved = requests the server accepted
  in the 120 s after the first ÷ 1200 (target >= 0.97), and the most it saw in any 60 s window (must be <= 600).
- e2e: 10,000 items from a JSONL file into a SQLite table, concurrency 16, on the SQLite backend, server in its own
  process; items/s, and this process's RSS after 1,000 items and at the end (flat: the end within 20% + 10 MB).

Writes results/ai-batch-<UTC stamp>.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jobkit  # noqa: E402
import jobkit.jobs  # noqa: E402
from jobkit.backends import Backend, from_url  # noqa: E402
from jobkit.jobs._quota import Budget, SharedRate  # noqa: E402
from jobkit.jobs.ai import configure_provider  # noqa: E402
from jobkit.jobs.ai.calls import Caller  # noqa: E402
from jobkit.jobs.ai.client import ChatClient, _httpx  # noqa: E402
from jobkit.jobs.ai.models import Retry  # noqa: E402
from jobkit.jobs.ai.prices import pricer  # noqa: E402
from jobkit.jobs.ai.providers import get_provider  # noqa: E402
from jobkit.jobs.ai.testing import FakeLLM  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "system", "content": "You write glossary entries."},
            {"role": "user", "content": "Define 'lease' in two sentences."}]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


SERVER = textwrap.dedent("""
    import sys
    from jobkit.jobs.ai.testing import FakeLLM
    llm = FakeLLM(latency=float(sys.argv[1])).start()
    print(llm.base_url, flush=True)
    sys.stdin.read()
    llm.stop()
""")


class Served:
    """FakeLLM in a process of its own, so its thread does not share the measured process's interpreter lock."""

    def __init__(self, latency: float = 0.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(latency)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- overhead ---------------------------------------------------------------------------------------------------------
async def _direct(url: str, n: int) -> list[float]:
    httpx = _httpx()
    body = json.dumps({"model": MODEL, "max_tokens": 64, "messages": MESSAGES})
    times = []
    async with httpx.AsyncClient(headers={"Authorization": "Bearer test-key", "Content-Type": "application/json"},
                                 transport=httpx.AsyncHTTPTransport(retries=0)) as client:
        for _ in range(n):
            t = time.perf_counter()
            resp = await client.post(url + "/chat/completions", content=body)
            json.loads(resp.content)["choices"][0]["message"]["content"]
            times.append(time.perf_counter() - t)
    return times


async def _jobkit(backend: Backend, n: int) -> list[float]:
    provider = get_provider("default")
    client = ChatClient(provider, timeout=30, connections=4)
    rate = SharedRate(backend, "bench", f"default:{MODEL}", 10**9)
    caller = Caller(client, rate, Budget(backend, "bench", f"cost-{time.time()}", 10**6), pricer(provider, MODEL),
                    MODEL, Retry(), 0, None, prefetch=True)  # as ai_batch runs it
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            await caller.generate(MESSAGES, max_tokens=64, response_model=None)
            times.append(time.perf_counter() - t)
        await caller.drain()
    finally:
        await client.aclose()
    return times


async def overhead(calls: int, redis_url: str | None, rounds: int = 4) -> list[dict[str, Any]]:
    out = []
    tmp = tempfile.mkdtemp()
    for latency in (0.0, 0.02):
        with Served(latency) as llm:
            configure_provider("default", base_url=llm.base_url, api_key="test-key", requests_per_minute=10**9)
            backends = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/bench-{latency}.db"}
            if redis_url:
                backends["redis"] = redis_url
            opened = {k: from_url(u) for k, u in backends.items()}
            for b in opened.values():
                await b.open()
            samples: dict[str, list[float]] = {"direct": [], **{k: [] for k in opened}}
            await _direct(llm.base_url, 20)  # warm up
            for b in opened.values():
                await _jobkit(b, 20)
            per = max(1, calls // rounds)
            for _ in range(rounds):
                samples["direct"] += await _direct(llm.base_url, per)
                for name, b in opened.items():
                    samples[name] += await _jobkit(b, per)
            for b in opened.values():
                await b.close()
        d50, d95 = pct(samples["direct"], 0.5), pct(samples["direct"], 0.95)
        for name in opened:
            s = samples[name]
            out.append({"latency_ms": latency * 1000, "backend": name, "calls": len(s),
                        "direct_p50_ms": d50 * 1000, "direct_p95_ms": d95 * 1000,
                        "jobkit_p50_ms": pct(s, 0.5) * 1000, "jobkit_p95_ms": pct(s, 0.95) * 1000,
                        "overhead_p50_ms": (pct(s, 0.5) - d50) * 1000, "overhead_p95_ms": (pct(s, 0.95) - d95) * 1000})
    return out


# -- saturation -------------------------------------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import asyncio, sys
    import jobkit, jobkit.jobs
    asyncio.run(jobkit.Worker([jobkit.jobs.ai_batch], backend=sys.argv[1], concurrency=1).run())
""")


async def saturation(backend_url: str, seconds: float = 120.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    script = tmp / "worker.py"
    script.write_text(WORKER)
    with FakeLLM(requests_per_minute=600) as llm:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBKIT_FILE_ROOTS": str(tmp), "OPENAI_API_KEY": "test-key",
               "JOBKIT_AI_BASE_URL": llm.base_url, "JOBKIT_AI_REQUESTS_PER_MINUTE": "600"}
        backend = await jobkit.connect(backend_url)
        if backend_url.startswith("redis"):
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(backend_url)
            await client.flushdb()
            await client.aclose()
        queue = jobkit.Queue("default", backend=backend)
        jobs = [await queue.add(jobkit.jobs.ai_batch, {
            "items": [{"n": i} for i in range(5000)], "sections": {"s": {"prompt": "Item {n}"}}, "model": MODEL,
            "max_tokens": 16, "concurrency": 8, "cost_limit": None, "sink": f"jsonl:///out-{k}.jsonl"})
            for k in range(2)]
        procs = [subprocess.Popen([sys.executable, str(script), backend_url], env=env, cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            deadline = time.monotonic() + seconds + 30
            while time.monotonic() < deadline:
                accepted = list(llm.accepted)
                if accepted and accepted[-1] - accepted[0] >= seconds + 1:
                    break
                await asyncio.sleep(1)
            for j in jobs:
                await queue.cancel(j.id)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
            await backend.close()
        accepted = sorted(llm.accepted)
        refused = llm.statuses[429]
    t0 = accepted[0]
    inside = [t for t in accepted if t < t0 + seconds]
    worst, j = 0, 0
    for i, t in enumerate(accepted):  # the most requests in any 60 s window [t, t + 60)
        while j < len(accepted) and accepted[j] < t + 60:
            j += 1
        worst = max(worst, j - i)
    return {"backend": backend_url.split(":")[0], "seconds": seconds, "accepted": len(inside),
            "allowed": 600 * seconds / 60, "achieved": len(inside) / (600 * seconds / 60), "max_in_60s": worst,
            "server_429s": refused}


# -- e2e --------------------------------------------------------------------------------------------------------------
async def e2e(n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    with Served() as server:
        base_url = server.base_url
        configure_provider("default", base_url=base_url, api_key="test-key", requests_per_minute=10**9)
        jobkit.jobs.configure(file_roots=[tmp])
        (tmp / "items.jsonl").write_text("".join(json.dumps({"term": f"term {i}", "n": i}) + "\n" for i in range(n)))
        backend = await jobkit.connect(f"sqlite:///{tmp / 'jobs.db'}")
        rss: list[tuple[int, float]] = []
        handle = await jobkit.submit(jobkit.jobs.ai_batch, {
            "source": {"kind": "jsonl", "path": "items.jsonl"}, "key": "n", "keep": ["term"],
            "sections": {"definition": {"prompt": "Define '{term}' in two sentences."}}, "model": MODEL,
            "max_tokens": 64, "concurrency": 16, "batch_size": 50, "cost_limit": None,
            "sink": "sqlite:///out.db?table=entries"}, backend=backend)
        started = time.perf_counter()

        async def watch() -> None:
            async for p in handle.progress():
                done = int(p.extra.get("items_done") or 0)
                if not rss or done >= rss[-1][0] + n // 10:
                    rss.append((done, rss_mb()))

        watcher = asyncio.create_task(watch())
        report = await handle.result(timeout=1800)
        took = time.perf_counter() - started
        watcher.cancel()
        rss.append((n, rss_mb()))
        await backend.close()
    early = next((mb for done, mb in rss if done >= n // 10), rss[0][1])
    return {"items": n, "ok": report.items_ok, "seconds": took, "items_per_s": n / took, "rss_mb_at_10pct": early,
            "rss_mb_end": rss[-1][1], "flat": rss[-1][1] <= early * 1.2 + 10, "rss_samples": rss}


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# AI batch benchmark {res['stamp']}", "",
             f"Python {sys.version.split()[0]}, {os.cpu_count()} cores.", ""]
    if "overhead" in res:
        lines += ["## Overhead per call (jobkit's call path - direct client calls)", "",
                  "| latency | backend | calls | direct p50 | direct p95 | jobkit p50 | jobkit p95 | overhead p50 |"
                  " overhead p95 | p95 < 1 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["overhead"]:
            lines.append(f"| {r['latency_ms']:.0f} ms | {r['backend']} | {r['calls']} | {r['direct_p50_ms']:.2f} |"
                         f" {r['direct_p95_ms']:.2f} | {r['jobkit_p50_ms']:.2f} | {r['jobkit_p95_ms']:.2f} |"
                         f" {r['overhead_p50_ms']:.2f} | {r['overhead_p95_ms']:.2f} |"
                         f" {'yes' if r['overhead_p95_ms'] < 1 else 'no'} |")
        lines.append("")
    if "saturation" in res:
        s = res["saturation"]
        lines += ["## Rate-limit saturation, 2 worker processes, server allows 600/min", "",
                  f"backend {s['backend']}: {s['accepted']} accepted in {s['seconds']:.0f} s of {s['allowed']:.0f}"
                  f" allowed = **{s['achieved']:.3f}** (target >= 0.97); most in any 60 s window: {s['max_in_60s']}"
                  f" (limit 600); the server refused {s['server_429s']}.", ""]
    if "e2e" in res:
        e = res["e2e"]
        lines += ["## 10,000 items end to end (JSONL source → SQLite sink, SQLite backend, concurrency 16)", "",
                  f"{e['ok']:,} items in {e['seconds']:.1f} s = {e['items_per_s']:.0f} items/s; RSS"
                  f" {e['rss_mb_at_10pct']:.0f} MB at 10% → {e['rss_mb_end']:.0f} MB at the end"
                  f" ({'flat' if e['flat'] else 'GROWING'}).", ""]
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["overhead", "saturation", "e2e"])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--redis", default=os.environ.get("JOBKIT_BENCH_REDIS", "redis://127.0.0.1:6379/14"))
    ap.add_argument("--backend", default=None, help="backend of the saturation run (default: the Redis URL)")
    args = ap.parse_args()
    res: dict[str, Any] = {"stamp": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}
    if args.only in (None, "overhead"):
        res["overhead"] = await overhead(args.calls, args.redis)
    if args.only in (None, "saturation"):
        res["saturation"] = await saturation(args.backend or args.redis, args.seconds)
    if args.only in (None, "e2e"):
        res["e2e"] = await e2e(args.items)
    text = markdown(res)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = f"ai-batch-{res['stamp']}" + (f"-{args.only}" if args.only else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
