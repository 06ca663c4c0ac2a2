"""What owners and tags cost: add + claim + finish of N jobs, with and without an owner and two tags, per backend.

    .venv/bin/python benchmarks/owners_bench.py --redis redis://127.0.0.1:6379/15
    git archive main jobkit | tar -x -C /tmp/jobkit-before      # and jobs without owners, against another tree:
    .venv/bin/python benchmarks/owners_bench.py --before /tmp/jobkit-before

Each measurement runs in a fresh process: `Queue.add_bulk` in chunks of 100, then claims of 50 and one `finish`
for each claim (the steps a worker takes, without its task overhead) until the queue is empty; jobs/s = N / that
time. Rows: "plain" (no owner, no tags) and "owned" (one owner and two tags per chunk) on
this tree, and "plain (before)" on the --before tree. Rounds alternate the variants' order; medians are reported,
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


async def drain(url: str, n: int, owned: bool) -> float:
    """Seconds to add `n` jobs and take each through claim and finish."""
    import jobkit
    from jobkit.models import JobState, Outcome

    q = jobkit.Queue(f"bench-{os.getpid()}", backend=url)
    backend = await q.backend()
    start = time.perf_counter()
    for k in range(0, n, CHUNK):  # one owner per chunk, as many users would
        extra: dict[str, Any] = {"owner": f"user-{k // CHUNK}", "tags": {"doc": f"d-{k}", "kind": "bench"}}
        await q.add_bulk("noop", list(range(k, min(n, k + CHUNK))), **(extra if owned else {}))
    done = 0
    while done < n:
        now = time.time()
        jobs = (await backend.claim(q.name, "w", limit=CLAIM, lease=60, now=now)).jobs
        await backend.finish(q.name, "w", [Outcome(job_id=j.id, state=JobState.COMPLETED, result=None) for j in jobs],
                             now, keep_completed=1000)
        done += len(jobs)
    took = time.perf_counter() - start
    await backend.close()
    return took


def child(url: str, n: int, owned: bool) -> None:
    print(json.dumps({"seconds": asyncio.run(drain(url, n, owned))}))


def measure(url: str, n: int, owned: bool, tree: str | None) -> float:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree
    cmd = [sys.executable, __file__, "--child", "--url", url, "--n", str(n)] + (["--owned"] if owned else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url")
    parser.add_argument("--owned", action="store_true")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--redis", help="a Redis URL (its db is flushed of nothing: queues are per process)")
    parser.add_argument("--before", help="a directory holding the jobkit package to compare owner-less jobs with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.child:
        child(args.url, args.n, args.owned)
        return
    tmp = tempfile.mkdtemp()
    targets: list[tuple[str, str, int]] = [("memory", "memory://", 20_000)]
    targets.append(("sqlite", f"sqlite:///{tmp}/bench.db", 5_000))
    if args.redis:
        targets.append(("redis", args.redis, 10_000))
    variants: list[tuple[str, bool, str | None]] = [("plain", False, None), ("owned", True, None)]
    if args.before:
        variants.append(("plain (before)", False, args.before))
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for label, url, n in targets:
            for name, owned, tree in order:
                fresh = url.replace("bench.db", f"bench-{r}-{variants.index((name, owned, tree))}.db")
                seconds = measure(fresh, n, owned, tree)
                results.setdefault((label, name), []).append(n / seconds)
    lines = ["| backend | variant | jobs/s (median) | range | vs plain |", "|---|---|---|---|---|"]
    for label, _, _ in targets:
        base = statistics.median(results[(label, "plain")])
        for name, _, _ in variants:
            rates = results[(label, name)]
            med = statistics.median(rates)
            lines.append(f"| {label} | {name} | {med:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {med / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"owners-{stamp}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"# owners_bench {stamp}, {args.rounds} rounds\n\n{table}\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
