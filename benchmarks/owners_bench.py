"""What owners and tags cost: add + claim + finish of N jobs, with and without an owner and two tags, per backend.

    .venv/bin/python benchmarks/owners_bench.py --redis redis://127.0.0.1:6379/15
    git archive <commit before owners> jobkit | tar -x -C /tmp/jobkit-before     # owner-less jobs, before and after:
    .venv/bin/python benchmarks/owners_bench.py --redis redis://127.0.0.1:6379/15 --before /tmp/jobkit-before

One measurement: `Queue.add_bulk` in chunks of 100, then claims of 50 and one `finish` per claim (a worker's steps,
without its task overhead) until the queue is empty. "owned" gives each chunk an owner and two tags; "plain" none;
"plain (before)" runs on the --before tree. On a shared machine wall time swings by 3x, so the figure is CPU time
per job: this process's (every thread, so aiosqlite's too) and, on Redis, the server's (INFO's used_cpu_*), which
other programs' load barely moves. Each process runs its variants alternately, round by round; medians are reported
and written to benchmarks/results/owners-<stamp>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHUNK, CLAIM = 100, 50


async def server_cpu(backend: Any) -> float:
    """Seconds of CPU the Redis server has used (0.0 for other backends)."""
    if not backend.url.startswith("redis"):
        return 0.0
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(backend.url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def drain(url: str, n: int, owned: bool, name: str) -> tuple[float, float]:
    """(client CPU seconds, server CPU seconds) to add `n` jobs and take each through claim and finish."""
    import jobkit
    from jobkit.models import JobState, Outcome

    q = jobkit.Queue(name, backend=url)
    backend = await q.backend()
    server0, client0 = await server_cpu(backend), time.process_time()
    for k in range(0, n, CHUNK):
        extra: dict[str, Any] = {"owner": f"user-{k // CHUNK}", "tags": {"doc": f"d-{k}", "kind": "bench"}}
        await q.add_bulk("noop", list(range(k, min(n, k + CHUNK))), **(extra if owned else {}))
    done = 0
    while done < n:
        now = time.time()
        jobs = (await backend.claim(q.name, "w", limit=CLAIM, lease=60, now=now)).jobs
        await backend.finish(q.name, "w", [Outcome(job_id=j.id, state=JobState.COMPLETED) for j in jobs], now,
                             keep_completed=1000)
        done += len(jobs)
    client = time.process_time() - client0
    server = await server_cpu(backend) - server0
    return client, server


async def child(url: str, n: int, variants: list[bool], rounds: int) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {str(v): [] for v in variants}
    for r in range(rounds):
        for owned in variants if r % 2 == 0 else variants[::-1]:
            out[str(owned)].append(list(await drain(url, n, owned, f"bench-{os.getpid()}-{r}-{owned}")))
    return out


def run_child(url: str, n: int, variants: list[bool], rounds: int, tree: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree
    cmd = [sys.executable, __file__, "--child", "--url", url, "--n", str(n), "--rounds", str(rounds),
           "--variants", ",".join("1" if v else "0" for v in variants)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url")
    parser.add_argument("--variants", default="0,1", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--redis", help="a Redis URL (each measurement uses a queue of its own)")
    parser.add_argument("--before", help="a directory holding the jobkit package to compare owner-less jobs with")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.child:
        variants = [v == "1" for v in args.variants.split(",")]
        print(json.dumps(asyncio.run(child(args.url, args.n, variants, args.rounds))))
        return
    tmp = tempfile.mkdtemp()
    targets: list[tuple[str, str, int]] = [("memory", "memory://", 5_000)]
    targets.append(("sqlite", f"sqlite:///{tmp}/b.db", 2_000))
    if args.redis:
        targets.append(("redis", args.redis, 2_000))
    lines = ["| backend | variant | client CPU µs/job | server CPU µs/job | total | vs plain |",
             "|---|---|---|---|---|---|"]
    for label, url, n in targets:
        rows: dict[str, list[list[float]]] = {}
        now = run_child(url, n, [False, True], args.rounds, None)
        rows["plain"], rows["owned"] = now["False"], now["True"]
        if args.before:
            before_url = url.replace("b.db", "before.db")  # an older jobkit refuses a newer schema
            rows["plain (before)"] = run_child(before_url, n, [False], args.rounds, args.before)["False"]
        totals = {k: statistics.median(c + s for c, s in v) * 1e6 / n for k, v in rows.items()}
        for k, v in rows.items():
            client = statistics.median(c for c, _ in v) * 1e6 / n
            server = statistics.median(s for _, s in v) * 1e6 / n
            lines.append(f"| {label} | {k} | {client:.1f} | {server:.1f} | {totals[k]:.1f} |"
                         f" {totals[k] / totals['plain']:.2f} |")
    table = "\n".join(lines)
    print(table)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"owners-{stamp}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"# owners_bench {stamp}, {args.rounds} rounds, CPU time per job (medians)\n\n{table}\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
