"""jobkit on a 3-master Redis Cluster through each cluster client, in one run: drain and latency.

    .venv/bin/python benchmarks/redis_cluster_clients.py [--rounds 3] [--n 3000] [--latency-n 300]

Starts the cluster the tests use (tests/cluster/servers.py: own redis-servers on free loopback ports, stopped by
PID), then runs, interleaved per round and each in a fresh process: `jobkit` (jobkit's own slot map, lanes and
redirections, jobkit/backends/_redis_servers.py) and `redis-py` (redis.asyncio.RedisCluster underneath:
benchmarks/redis_py_cluster.py). Scenarios as in the shared harness,
without its probe: drain = N no-op jobs added with add_bulk, then one Worker at C=10 and C=50 until all ran
(jobs/s from the first start to the last end); latency = submit + result() of one no-op job at a time with the
worker in the same process. Prints medians per client and the ratio redis-py / jobkit.
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
import time
from pathlib import Path

import jobkit

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = {"jobkit": "", "redis-py": "redis-py"}


ran: list[tuple[float, float]] = []  # (start, end) of each job run in this process
done = asyncio.Event()
expected = [0]


@jobkit.task(name="bench.noop", queue="bench")
async def noop(ctx: jobkit.Context, payload: dict[str, int]) -> int:
    started = time.time()
    ran.append((started, time.time()))
    if len(ran) >= expected[0]:
        done.set()
    return payload["i"]


async def _scenario(url: str, scenario: str, n: int, concurrency: int) -> dict[str, float]:
    expected[0] = n
    backend = await jobkit.connect(url)
    queue = jobkit.Queue("bench", backend=backend)
    await queue.clean("completed", older_than=0)
    worker = jobkit.Worker([noop], backend=backend, queues=["bench"], concurrency=concurrency,
                           handle_signals=False)
    try:
        if scenario == "drain":
            await queue.add_bulk(noop, ({"i": i} for i in range(n)))
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(done.wait(), 300)
            first, last = min(s for s, _ in ran), max(e for _, e in ran)
            out = {"jobs_per_s": n / (last - first)}
        else:
            task = asyncio.create_task(worker.run())
            await worker.started.wait()
            samples = []
            for i in range(n + 5):
                t0 = time.perf_counter()
                handle = await jobkit.submit(noop, {"i": i}, backend=backend)
                assert await handle.result(timeout=30) == i
                samples.append(time.perf_counter() - t0)
            ms = sorted(s * 1000 for s in samples[5:])
            q = statistics.quantiles(ms, n=100, method="inclusive")
            out = {"p50_ms": q[49], "p99_ms": q[98]}
        worker.stop()
        await task
    finally:
        await backend.close()
    return out


def _child(url: str, scenario: str, n: int, concurrency: int) -> None:
    import uvloop

    if os.environ.get("JOBKIT_BENCH_CLUSTER_CLIENT") == "redis-py":
        from benchmarks.redis_py_cluster import use

        use()

    print(json.dumps(uvloop.run(_scenario(url, scenario, n, concurrency))))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--latency-n", type=int, default=300)
    p.add_argument("--child", nargs=4, metavar=("URL", "SCENARIO", "N", "C"))
    a = p.parse_args()
    if a.child:
        _child(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]))
        return
    sys.path.insert(0, str(ROOT))
    from tests.cluster.servers import RedisCluster

    runs = [("drain C=10", "drain", a.n, 10), ("drain C=50", "drain", a.n, 50),
            ("latency", "latency", a.latency_n, 10)]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = RedisCluster(Path(tmp))
        cluster.start()
        try:
            for _ in range(a.rounds):
                for label, scenario, n, c in runs:
                    for client, env in CLIENTS.items():
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", cluster.url, scenario, str(n), str(c)],
                            env={**os.environ, "JOBKIT_BENCH_CLUSTER_CLIENT": env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
                        if out.returncode:
                            sys.exit(f"{client} {label} failed:\n{out.stderr[-3000:]}")
                        results.setdefault((label, client), []).append(json.loads(out.stdout.splitlines()[-1]))
        finally:
            cluster.stop()
    print(f"| scenario (median of {a.rounds}) | jobkit's client | redis-py RedisCluster | redis-py / jobkit |")
    print("|---|---:|---:|---:|")
    for label, scenario, _, _ in runs:
        key = "jobs_per_s" if scenario == "drain" else "p50_ms"
        ours = statistics.median(r[key] for r in results[label, "jobkit"])
        theirs = statistics.median(r[key] for r in results[label, "redis-py"])
        unit = "jobs/s" if scenario == "drain" else "ms p50"
        extra = ""
        if scenario == "latency":
            p99s = [statistics.median(r["p99_ms"] for r in results[label, c]) for c in CLIENTS]
            extra = f" (p99 {p99s[0]:.2f} / {p99s[1]:.2f})"
        print(f"| {label} ({unit}){extra} | {ours:,.2f} | {theirs:,.2f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
