"""Before/after on one machine: local_bench.py measurements of two jobkit trees, interleaved round by round.

    git archive main jobkit | tar -x -C /tmp/jobkit-before       # the code to compare against
    benchmarks/.venv/bin/python benchmarks/local_ab.py --before /tmp/jobkit-before --rounds 5 \\
        --runs jobkit-sqlite:e2e,huey-sqlite:e2e,jobkit-sqlite:drain

Each round runs every measurement once per tree (the peers once), each in a fresh process, the trees' order
swapped every other round, so that a machine whose speed drifts (this one swings +-30% between runs) weighs on
both sides alike; medians and ranges are reported, and written to benchmarks/results/local-ab-<stamp>.md/.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE / "local_bench.py"
KEY = {"drain": "jobs_per_s", "e2e": "jobs_per_s", "add": "jobs_per_s", "latency": "p50_ms"}


def one(target: str, metric: str, n: int, tree: str | None, rounds: int) -> dict[str, Any]:
    """One measurement in a fresh process; `tree` is a directory holding the jobkit package to import instead."""
    env = dict(os.environ)
    if tree is not None and target.startswith("jobkit"):
        env["PYTHONPATH"] = tree  # ahead of the editable install: the script's own directory comes first
    cmd = [sys.executable, str(BENCH), "--child", "--target", target, "--metric", metric, "--n", str(n),
           "--rounds", str(rounds), "--warmup", "10"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{target} {metric} ({tree or 'this tree'}) failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a directory holding the jobkit package to compare against")
    parser.add_argument("--runs", type=lambda s: [tuple(x.split(":")) for x in s.split(",")], required=True,
                        help="target:metric pairs; jobkit targets run on both trees, peers once per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-n", type=int, default=20_000)
    parser.add_argument("--sqlite-n", type=int, default=5_000)
    parser.add_argument("--latency-rounds", type=int, default=300)
    args = parser.parse_args()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    rows: dict[str, list[dict[str, Any]]] = {}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for target, metric in args.runs:
            n = args.memory_n if "memory" in target else args.sqlite_n
            sides = [("before", args.before), ("after", None)] if target.startswith("jobkit") else [("peer", None)]
            if r % 2:
                sides.reverse()  # before first in even rounds, after first in odd ones: order weighs on neither
            for side, tree in sides:
                res = one(target, metric, n, tree, args.latency_rounds)
                label = f"{target} {metric} {side}"
                rows.setdefault(label, []).append(res)
                print(f"round {r + 1}: {label:<40} {res[KEY[metric]]:,.2f}", flush=True)
        loads.append(os.getloadavg()[0])
    lines = [f"# Interleaved before/after {stamp}\n",
             f"{args.rounds} rounds; before = {args.before}; 1-minute load average per round: "
             + ", ".join(f"{x:.2f}" for x in loads) + "\n",
             "| measurement | median | range | runs |", "|---|---:|---|---|"]
    for label, runs in rows.items():
        key = KEY[label.split()[1]]
        vals = [x[key] for x in runs]
        lines.append(f"| {label} | {statistics.median(vals):,.2f} | {min(vals):,.2f}-{max(vals):,.2f} "
                     f"| {', '.join(f'{v:,.0f}' if v > 100 else f'{v:.2f}' for v in vals)} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = HERE / "results" / f"local-ab-{stamp}"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"stamp": stamp, "before": args.before, "loads": loads,
                                                    "runs": rows}, indent=2) + "\n")
    print(f"written: {out.relative_to(HERE.parent)}.md and .json")


if __name__ == "__main__":
    main()
