"""Local throughput and latency: jobkit on memory:// and sqlite:/// beside a peer on the same storage.

    python3 -m venv benchmarks/.venv && benchmarks/.venv/bin/pip install -e . -r benchmarks/requirements.txt
    benchmarks/.venv/bin/python benchmarks/local_bench.py                 # the full comparison (~5 minutes)
    benchmarks/.venv/bin/python benchmarks/local_bench.py --profile jobkit-sqlite --metric drain

Peers, installed only in the benchmark's own venv (never jobkit dependencies, see requirements.txt):
- memory: taskiq's InMemoryBroker, which runs each kicked task at once as an asyncio task;
- SQLite: huey's SqliteHuey with its consumer in-process (10 worker threads, consumer defaults otherwise).

Three measurements, each library in its own fresh subprocess, each repeated (default 3 times, median reported):
- drain: enqueue N no-op jobs, then start one consumer (jobkit: one Worker at concurrency 10) and run them
  all. jobs/s = N / (last job end - first job start), both taken inside the jobs with time.perf_counter;
  wall = consumer start until it has stopped with every outcome written.
- e2e: the consumer starts first (as in the drain), then a producer adds N no-op jobs one call at a time,
  awaiting each, the way an app or a notebook loop submits (jobkit: `await queue.add(task)`, and as a second
  row `await jobkit.submit(task)`; huey: one enqueue per call; taskiq: one `kiq()` per call), until every job
  has run. jobs/s = N / (first add -> last job end); producer calls/s = N / the producer loop's time.
- latency: sequential enqueue -> result round trips with the consumer already running, after warm-ups;
  p50 and p99 over the timed rounds.
- add (jobkit and huey, no consumer): the e2e producer alone, N awaited adds (huey: N enqueues); the most
  that e2e could reach, whatever the consumer costs.

Peers wait for results by polling, with defaults of 50 ms and up (huey's Result.get) and 200 ms (taskiq's
wait_result), so their default latency mostly shows that interval. The `*-tight` rows (latency only) poll
every millisecond through the libraries' own options, to separate design from defaults.

`--profile TARGET` runs one jobkit measurement under cProfile (every thread, so aiosqlite's too) or
pyinstrument, and writes the report to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
INSTALL = "python3 -m venv benchmarks/.venv && benchmarks/.venv/bin/pip install -e . -r benchmarks/requirements.txt"

# target -> (storage, library label, is jobkit, which metrics it runs)
TARGETS: dict[str, tuple[str, str, bool, tuple[str, ...]]] = {
    "jobkit-memory": ("memory", "jobkit memory://", True, ("drain", "e2e", "latency", "add")),
    "jobkit-memory-submit": ("memory", "jobkit memory://, jobkit.submit per job", True, ("e2e",)),
    "taskiq-memory": ("memory", "taskiq InMemoryBroker", False, ("drain", "e2e", "latency")),
    "taskiq-memory-tight": ("memory", "taskiq InMemoryBroker, 1 ms result polling", False, ("latency",)),
    "jobkit-sqlite": ("sqlite", "jobkit sqlite:///", True, ("drain", "e2e", "latency", "add")),
    "jobkit-sqlite-submit": ("sqlite", "jobkit sqlite:///, jobkit.submit per job", True, ("e2e",)),
    "huey-sqlite": ("sqlite", "huey SqliteHuey", False, ("drain", "e2e", "latency", "add")),
    "huey-sqlite-tight": ("sqlite", "huey SqliteHuey, 1 ms polling", False, ("latency",)),
}
PEER = {"memory": "taskiq-memory", "sqlite": "huey-sqlite"}
GOALS = {"memory": {"drain": 20_000.0}, "sqlite": {"drain": 3_000.0, "p50_ms": 5.0}}
E2E_VS_PEER = {"memory": 1.0, "sqlite": 2.0}  # e2e target: at least this many times the peer's jobs/s
CONCURRENCY = 10
TIGHT = 0.001  # seconds between polls for the *-tight peers
Section = Callable[[], AbstractContextManager[None]]


# -- measuring, shared by every library ---------------------------------------------------------------
class Probe:
    """First start and last end of N jobs, stamped inside the jobs with perf_counter (thread-safe)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.first: float | None = None
        self.last = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self.first is None:
                self.first = time.perf_counter()

    def begin(self) -> None:
        """e2e: time from now (the first add) instead of from the first job's start."""
        self.first = time.perf_counter()

    def end(self) -> bool:
        """Record one job's end; True when it was the last of the N."""
        with self._lock:
            self.count += 1
            self.last = time.perf_counter()
            return self.count == self.n

    def rate(self) -> float:
        assert self.first is not None and self.count == self.n, "not every job ran"
        return self.n / (self.last - self.first)


def drain_result(n: int, probe: Probe, enqueue_s: float, wall_s: float) -> dict[str, Any]:
    return {"n": n, "jobs_per_s": probe.rate(), "drain_s": probe.last - (probe.first or 0.0),
            "wall_s": wall_s, "enqueue_s": enqueue_s, "enqueue_per_s": n / enqueue_s}


def e2e_result(n: int, probe: Probe, produce_s: float) -> dict[str, Any]:
    return {"n": n, "jobs_per_s": probe.rate(), "e2e_s": probe.last - (probe.first or 0.0),
            "produce_s": produce_s, "produce_per_s": n / produce_s}


def latency_result(samples: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in samples)
    return {"rounds": len(ms), "p50_ms": statistics.median(ms), "p99_ms": statistics.quantiles(ms, n=100)[98],
            "mean_ms": statistics.fmean(ms), "max_ms": ms[-1]}


def timed_rounds(rounds: int, warmup: int, one: Callable[[int], None]) -> list[float]:
    samples = []
    for i in range(warmup + rounds):
        t0 = time.perf_counter()
        one(i)
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return samples


async def timed_rounds_async(rounds: int, warmup: int, one: Callable[[int], Any]) -> list[float]:
    samples = []
    for i in range(warmup + rounds):
        t0 = time.perf_counter()
        await one(i)
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return samples


# -- jobkit ------------------------------------------------------------------------------------------
async def jobkit_drain(url: str, n: int, section: Section | None = None) -> dict[str, Any]:
    """`section`, when profiling, wraps the worker's part (on SQLite, over a fresh connection of its own)."""
    import jobkit

    probe, done = Probe(n), asyncio.Event()

    @jobkit.task(queue="bench-drain")
    async def noop(ctx: Any) -> None:  # hints resolve in module globals: no jobkit there
        probe.start()
        if probe.end():
            done.set()

    backend = await jobkit.connect(url)
    t0 = time.perf_counter()
    await jobkit.Queue("bench-drain", backend=backend).add_bulk(noop, [None] * n)
    enqueue_s = time.perf_counter() - t0
    with (section or contextlib.nullcontext)():
        if section is not None and not url.startswith("memory:"):
            await backend.close()  # so that the profiled SQLite thread is the worker's alone
            backend = await jobkit.connect(url)
        t0 = time.perf_counter()
        async with jobkit.Worker([noop], backend=backend, concurrency=CONCURRENCY, handle_signals=False) as worker:
            await done.wait()
        wall_s = time.perf_counter() - t0
    assert worker.processed == n, f"worker processed {worker.processed} of {n}"
    await backend.close()
    return drain_result(n, probe, enqueue_s, wall_s)


async def jobkit_e2e(url: str, n: int, submit: bool, section: Section | None = None) -> dict[str, Any]:
    """Worker first, then one add (or `jobkit.submit`) per job, each awaited; `section` wraps both."""
    import jobkit

    probe, done = Probe(n), asyncio.Event()

    @jobkit.task(queue="bench-e2e")
    async def noop(ctx: Any) -> None:
        if probe.end():
            done.set()

    with (section or contextlib.nullcontext)():  # connect inside, so that a profile covers aiosqlite's thread
        backend = await jobkit.connect(url)
        queue = jobkit.Queue("bench-e2e", backend=backend)
        async with jobkit.Worker([noop], backend=backend, concurrency=CONCURRENCY, handle_signals=False) as worker:
            probe.begin()
            if submit:
                for _ in range(n):
                    await jobkit.submit(noop, backend=backend)
            else:
                for _ in range(n):
                    await queue.add(noop)
            produce_s = time.perf_counter() - (probe.first or 0.0)
            await done.wait()
        await backend.close()
    assert worker.processed == n, f"worker processed {worker.processed} of {n}"
    return e2e_result(n, probe, produce_s)


async def jobkit_add(url: str, n: int) -> dict[str, Any]:
    """The e2e producer with no consumer: N awaited adds."""
    import jobkit

    @jobkit.task(queue="bench-add")
    async def noop(ctx: Any) -> None:
        pass

    backend = await jobkit.connect(url)
    queue = jobkit.Queue("bench-add", backend=backend)
    await queue.add(noop)  # the first add creates the queue's row
    t0 = time.perf_counter()
    for _ in range(n):
        await queue.add(noop)
    add_s = time.perf_counter() - t0
    await backend.close()
    return {"n": n, "jobs_per_s": n / add_s, "add_s": add_s}


async def jobkit_latency(url: str, rounds: int, warmup: int, section: Section | None = None) -> dict[str, Any]:
    import jobkit

    @jobkit.task(queue="bench-latency")
    async def echo(ctx: Any, x: int) -> int:
        return x

    async def one(i: int) -> None:
        handle = await jobkit.submit(echo, i, backend=backend)
        assert await handle.result() == i

    with (section or contextlib.nullcontext)():
        backend = await jobkit.connect(url)
        async with jobkit.Worker([echo], backend=backend, concurrency=CONCURRENCY, handle_signals=False):
            samples = await timed_rounds_async(rounds, warmup, one)
        await backend.close()
    return latency_result(samples)


# -- huey (SQLite) -------------------------------------------------------------------------------------
@contextmanager
def huey_consumer(huey: Any, tight: bool) -> Iterator[None]:
    """huey's consumer in-process: 10 worker threads; `tight` polls an empty queue every millisecond."""
    polling = {"initial_delay": TIGHT, "backoff": 1.0, "max_delay": TIGHT} if tight else {}
    consumer = huey.create_consumer(workers=CONCURRENCY, worker_type="thread", **polling)
    consumer.start()
    try:
        yield
    finally:
        consumer.stop(graceful=True)


def huey_drain(path: str, n: int) -> dict[str, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=path)
    probe, done = Probe(n), threading.Event()

    @huey.task()
    def noop() -> None:
        probe.start()
        if probe.end():
            done.set()

    t0 = time.perf_counter()
    for _ in range(n):
        noop()
    enqueue_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with huey_consumer(huey, tight=False):
        done.wait()
    wall_s = time.perf_counter() - t0
    return drain_result(n, probe, enqueue_s, wall_s)


def huey_e2e(path: str, n: int) -> dict[str, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=path)
    probe, done = Probe(n), threading.Event()

    @huey.task()
    def noop() -> None:
        if probe.end():
            done.set()

    with huey_consumer(huey, tight=False):
        probe.begin()
        for _ in range(n):
            noop()
        produce_s = time.perf_counter() - (probe.first or 0.0)
        done.wait()
    return e2e_result(n, probe, produce_s)


def huey_add(path: str, n: int) -> dict[str, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=path)

    @huey.task()
    def noop() -> None:
        pass

    noop()
    t0 = time.perf_counter()
    for _ in range(n):
        noop()
    add_s = time.perf_counter() - t0
    return {"n": n, "jobs_per_s": n / add_s, "add_s": add_s}


def huey_latency(path: str, rounds: int, warmup: int, tight: bool) -> dict[str, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=path)
    wait = {"backoff": 1.0, "max_delay": TIGHT} if tight else {}

    @huey.task()
    def echo(x: int) -> int:
        return x

    def one(i: int) -> None:
        assert echo(i).get(blocking=True, timeout=30, **wait) == i

    with huey_consumer(huey, tight):
        samples = timed_rounds(rounds, warmup, one)
    return latency_result(samples)


# -- taskiq (memory) -----------------------------------------------------------------------------------
async def taskiq_drain(n: int) -> dict[str, Any]:
    from taskiq import InMemoryBroker

    # InMemoryBroker.kick starts each task at once; max_async_tasks only bounds a Receiver's listen loop.
    broker = InMemoryBroker(max_async_tasks=CONCURRENCY)
    probe, done = Probe(n), asyncio.Event()

    @broker.task
    async def noop() -> None:
        probe.start()
        if probe.end():
            done.set()

    await broker.startup()
    t0 = time.perf_counter()
    for _ in range(n):
        await noop.kiq()
    enqueue_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    await done.wait()
    await broker.wait_all()
    wall_s = time.perf_counter() - t0
    await broker.shutdown()
    return drain_result(n, probe, enqueue_s, wall_s)


async def taskiq_e2e(n: int) -> dict[str, Any]:
    from taskiq import InMemoryBroker

    broker = InMemoryBroker(max_async_tasks=CONCURRENCY)
    probe, done = Probe(n), asyncio.Event()

    @broker.task
    async def noop() -> None:
        if probe.end():
            done.set()

    await broker.startup()
    probe.begin()
    for _ in range(n):
        await noop.kiq()
    produce_s = time.perf_counter() - (probe.first or 0.0)
    await done.wait()
    await broker.wait_all()
    await broker.shutdown()
    return e2e_result(n, probe, produce_s)


async def taskiq_latency(rounds: int, warmup: int, tight: bool) -> dict[str, Any]:
    from taskiq import InMemoryBroker

    broker = InMemoryBroker(max_async_tasks=CONCURRENCY)
    wait = {"check_interval": TIGHT} if tight else {}

    @broker.task
    async def echo(x: int) -> int:
        return x

    async def one(i: int) -> None:
        result = await (await echo.kiq(i)).wait_result(timeout=30, **wait)
        assert result.return_value == i

    await broker.startup()
    samples = await timed_rounds_async(rounds, warmup, one)
    await broker.shutdown()
    return latency_result(samples)


# -- one measurement, in this (child) process ----------------------------------------------------------
def measure(
    target: str, metric: str, n: int, rounds: int, warmup: int, workdir: str, section: Section | None = None
) -> dict[str, Any]:
    """One measurement in this process; `section` wraps the part of a jobkit run worth profiling."""
    db = os.path.join(workdir, f"{target}-{metric}.db")
    tight = target.endswith("-tight")
    if target.startswith("jobkit-"):
        url = "memory://bench" if target.startswith("jobkit-memory") else f"sqlite:///{db}"
        if metric == "e2e":
            return asyncio.run(jobkit_e2e(url, n, target.endswith("-submit"), section))
        if metric == "add":
            return asyncio.run(jobkit_add(url, n))
        coro = jobkit_drain(url, n, section) if metric == "drain" else jobkit_latency(url, rounds, warmup, section)
        return asyncio.run(coro)
    if target.startswith("huey-"):
        if metric == "e2e":
            return huey_e2e(db, n)
        if metric == "add":
            return huey_add(db, n)
        return huey_drain(db, n) if metric == "drain" else huey_latency(db, rounds, warmup, tight)
    if target.startswith("taskiq-"):
        if metric == "e2e":
            return asyncio.run(taskiq_e2e(n))
        return asyncio.run(taskiq_drain(n) if metric == "drain" else taskiq_latency(rounds, warmup, tight))
    raise SystemExit(f"unknown target {target!r}")


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-") as workdir:
        result = measure(args.target, args.metric, args.n, args.rounds, args.warmup, workdir)
    print(json.dumps(result))


# -- profiling jobkit ----------------------------------------------------------------------------------
class ThreadedProfile:
    """cProfile over one section, in the calling thread and every thread started during it (aiosqlite's)."""

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.threads: list[cProfile.Profile] = []

    def _enable_in_new_thread(self, *_: object) -> None:  # the first profile event of a new thread
        p = cProfile.Profile()
        self.threads.append(p)
        p.enable()  # replaces this hook for the thread, until it ends

    @contextmanager
    def section(self) -> Iterator[None]:
        threading.setprofile(self._enable_in_new_thread)
        self.main.enable()
        try:
            yield
        finally:
            self.main.disable()
            threading.setprofile(None)

    def report(self, top: int) -> str:
        out = io.StringIO()
        stats = pstats.Stats(self.main, stream=out)
        for p in self.threads:
            stats.add(p)
        total = stats.total_tt  # type: ignore[attr-defined]
        threads = 1 + len(self.threads)
        out.write(f"profiled time (wall clock, summed over threads) {total:.2f}s over {threads} thread(s)\n")
        out.write("\n== top by cumulative time (share of all profiled time) ==\n")
        out.write(top_table(stats, "cumulative", total, top))
        out.write("\n== top by own time ==\n")
        out.write(top_table(stats, "tottime", total, top))
        return out.getvalue()


def profiled(args: argparse.Namespace, workdir: str) -> str:
    """One jobkit measurement with its worker part profiled; the result and the profiler's text report."""
    if args.profiler == "pyinstrument":
        from pyinstrument import Profiler  # samples the main thread only: the SQLite thread shows as waits

        prof = Profiler(interval=0.0005, async_mode="enabled")

        @contextmanager
        def section() -> Iterator[None]:
            prof.start()
            try:
                yield
            finally:
                prof.stop()

        result = measure(args.target, args.metric, args.n, args.rounds, args.warmup, workdir, section)
        text = prof.output_text(unicode=False, color=False)
    else:
        threaded = ThreadedProfile()
        result = measure(args.target, args.metric, args.n, args.rounds, args.warmup, workdir, threaded.section)
        text = threaded.report(args.top)
    return f"{args.target} {args.metric}: {json.dumps(result)}\n\n{text}"


def top_table(stats: pstats.Stats, key: str, total: float, top: int) -> str:
    rows = stats.stats  # type: ignore[attr-defined]  # {(file, line, fn): (cc, nc, tt, ct, callers)}
    index = 3 if key == "cumulative" else 2
    ordered = sorted(rows.items(), key=lambda kv: kv[1][index], reverse=True)[:top]
    lines = [f"{'share':>6} {'cum s':>7} {'own s':>7} {'calls':>9}  function"]
    for (file, line, fn), (_, calls, own, cum, _) in ordered:
        where = file if file == "~" else f"{short_path(file)}:{line}"
        share = 100 * (cum if index == 3 else own) / total
        lines.append(f"{share:5.1f}% {cum:7.3f} {own:7.3f} {calls:9d}  {fn}  {where}")
    return "\n".join(lines) + "\n"


def short_path(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    try:
        return str(Path(file).resolve().relative_to(HERE.parent))
    except ValueError:
        return file


# -- the comparison (parent process) -----------------------------------------------------------------
def run_child(target: str, metric: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--target", target, "--metric", metric,
           "--n", str(n), "--rounds", str(args.rounds), "--warmup", str(args.warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{target} {metric} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def size_for(target: str, args: argparse.Namespace) -> int:
    storage, _, is_jobkit, _ = TARGETS[target]
    n = args.memory_n if storage == "memory" else args.sqlite_n
    return n if is_jobkit or args.peer_cap is None else min(n, args.peer_cap)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    measured: dict[str, dict[str, Any]] = {}
    for target in args.targets:
        _, label, _, metrics = TARGETS[target]
        measured[target] = {}
        for metric in metrics:
            n = size_for(target, args)
            runs = []
            for rep in range(args.repeat):
                r = run_child(target, metric, n, args)
                runs.append(r)
                print(f"  {label:<45} {metric:<8} run {rep + 1}/{args.repeat}: {shown(metric, r)}", flush=True)
            measured[target][metric] = {"median": medians(runs), "runs": runs}
    return measured


def shown(metric: str, r: dict[str, Any]) -> str:
    """One run's figures, as the comparison prints them while it goes."""
    if metric == "drain":
        return f"{r['jobs_per_s']:,.0f} jobs/s, wall {r['wall_s']:.2f}s"
    if metric == "e2e":
        return f"{r['jobs_per_s']:,.0f} jobs/s, producer {r['produce_per_s']:,.0f} calls/s"
    if metric == "add":
        return f"{r['jobs_per_s']:,.0f} adds/s"
    return f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    versions: dict[str, str | None] = {}
    for dist in ("jobkit", "huey", "taskiq", "pydantic", "pydantic-core", "aiosqlite", "pyinstrument"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "versions": versions, "jobkit_source": jobkit_source()}


def jobkit_source() -> dict[str, Any]:
    """Which jobkit was measured: the commit, whether jobkit/ had uncommitted changes, and a digest of its code."""
    root = HERE.parent
    digest = hashlib.sha256()
    for path in sorted((root / "jobkit").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())

    def git(*argv: str) -> str | None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, timeout=10, check=True)
            return done.stdout.strip()
        return None

    status = git("status", "--porcelain", "--", "jobkit")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": bool(status) if status is not None else None,
            "digest": digest.hexdigest()[:12]}


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def median_of(measured: dict[str, dict[str, Any]], target: str, metric: str) -> dict[str, Any]:
    return measured.get(target, {}).get(metric, {}).get("median", {})


def spread(measured: dict[str, dict[str, Any]], target: str, metric: str, key: str, spec: str) -> str:
    """The median, and the range over the runs when there were several: "2,619 (2,536-3,787)"."""
    runs = [r[key] for r in measured.get(target, {}).get(metric, {}).get("runs", [])]
    if not runs:
        return "—"
    text = format(statistics.median(runs), spec)
    return text if len(runs) == 1 else f"{text} ({format(min(runs), spec)}-{format(max(runs), spec)})"


def table(measured: dict[str, dict[str, Any]]) -> str:
    """One row per library; on jobkit rows, how many times ahead of the peer (below 1: behind)."""
    lines = [
        "| storage | library | N | enqueued jobs/s | drained jobs/s (range) | drain wall s | p50 ms (range) | p99 ms "
        "| jobkit vs peer: drain | jobkit vs peer: p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in measured:
        storage, label, is_jobkit, _ = TARGETS[target]
        drain, lat = median_of(measured, target, "drain"), median_of(measured, target, "latency")
        if not drain and not lat:
            continue  # an e2e-only row: in the e2e table
        vs_drain = vs_p50 = "—"
        if is_jobkit:
            peer_drain = median_of(measured, PEER[storage], "drain")
            peer_lat, tight_lat = (median_of(measured, PEER[storage] + s, "latency") for s in ("", "-tight"))
            if drain and peer_drain:
                vs_drain = f"{drain['jobs_per_s'] / peer_drain['jobs_per_s']:.2f}x"
            if lat and peer_lat:
                vs_p50 = f"{peer_lat['p50_ms'] / lat['p50_ms']:.1f}x"
                if tight_lat:
                    vs_p50 += f" ({tight_lat['p50_ms'] / lat['p50_ms']:.1f}x vs 1 ms polling)"
        lines.append(
            f"| {storage} | {label} | {drain.get('n', '—')} | {fmt(drain.get('enqueue_per_s'), ',.0f')} "
            f"| {spread(measured, target, 'drain', 'jobs_per_s', ',.0f')} | {fmt(drain.get('wall_s'), '.2f')} "
            f"| {spread(measured, target, 'latency', 'p50_ms', '.2f')} | {fmt(lat.get('p99_ms'), '.2f')} "
            f"| {vs_drain} | {vs_p50} |"
        )
    return "\n".join(lines) + "\n"


def e2e_table(measured: dict[str, dict[str, Any]]) -> str:
    """One row per library that ran e2e; jobkit rows say how many times the peer's jobs/s they made."""
    lines = ["| storage | library | N | e2e jobs/s (range) | vs peer | producer alone, adds/s (range) |",
             "|---|---|---:|---:|---:|---:|"]
    for target in measured:
        e2e = median_of(measured, target, "e2e")
        if not e2e:
            continue
        storage, label, is_jobkit, _ = TARGETS[target]
        peer = median_of(measured, PEER[storage], "e2e")
        vs = f"{e2e['jobs_per_s'] / peer['jobs_per_s']:.2f}x" if is_jobkit and peer else "—"
        lines.append(f"| {storage} | {label} | {e2e['n']} | {spread(measured, target, 'e2e', 'jobs_per_s', ',.0f')} "
                     f"| {vs} | {spread(measured, target, 'add', 'jobs_per_s', ',.0f')} |")
    return "\n".join(lines) + "\n"


def goals(measured: dict[str, dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    checks = []
    for storage, wanted in GOALS.items():
        mine, peer = measured.get(f"jobkit-{storage}", {}), measured.get(PEER[storage], {})
        if "drain" in mine and "latency" in mine:
            rate, p50 = mine["drain"]["median"]["jobs_per_s"], mine["latency"]["median"]["p50_ms"]
            checks.append({"goal": f"{storage}: drain >= {wanted['drain']:,.0f} jobs/s", "measured": f"{rate:,.0f}",
                           "met": rate >= wanted["drain"]})
            if "p50_ms" in wanted:
                checks.append({"goal": f"{storage}: in-process p50 <= {wanted['p50_ms']:g} ms",
                               "measured": f"{p50:.2f} ms", "met": p50 <= wanted["p50_ms"]})
            if "drain" in peer and "latency" in peer:
                peer_rate, peer_p50 = peer["drain"]["median"]["jobs_per_s"], peer["latency"]["median"]["p50_ms"]
                checks.append({"goal": f"{storage}: drain ahead of {TARGETS[PEER[storage]][1]}",
                               "measured": f"{rate / peer_rate:.2f}x", "met": rate > peer_rate})
                checks.append({"goal": f"{storage}: p50 ahead of {TARGETS[PEER[storage]][1]}",
                               "measured": f"{peer_p50 / p50:.2f}x", "met": p50 < peer_p50})
        peer_e2e = median_of(measured, PEER[storage], "e2e")
        for target in (f"jobkit-{storage}", f"jobkit-{storage}-submit"):
            mine_e2e = median_of(measured, target, "e2e")
            if mine_e2e and peer_e2e:
                ratio, wanted_ratio = mine_e2e["jobs_per_s"] / peer_e2e["jobs_per_s"], E2E_VS_PEER[storage]
                checks.append({"goal": f"{TARGETS[target][1]}: e2e >= {wanted_ratio:g}x {TARGETS[PEER[storage]][1]}",
                               "measured": f"{ratio:.2f}x", "met": ratio >= wanted_ratio})
    lines = ["| target | measured | met |", "|---|---:|---|"]
    lines += [f"| {c['goal']} | {c['measured']} | {'yes' if c['met'] else '**no**'} |" for c in checks]
    return "\n".join(lines) + "\n", checks


def report(measured: dict[str, dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> str:
    v, src = info["versions"], info["jobkit_source"]
    goal_table, _ = goals(measured)
    return (
        f"# Local benchmark {args.stamp}\n\n"
        f"{info['cpu']}, {info['cores']} cores; {info['os']}; Python {info['python']}, SQLite {info['sqlite']}\n"
        f"jobkit {v['jobkit']}, huey {v['huey']}, taskiq {v['taskiq']}, pydantic {v['pydantic']}, "
        f"aiosqlite {v['aiosqlite']}; jobkit at {src['commit']}{' + uncommitted changes' if src['uncommitted'] else ''}"
        f" (code digest {src['digest']})\n1-minute load average {info['load_before']:.2f} before, "
        f"{info['load_after']:.2f} after (the benchmark itself adds about 1)\n\n"
        f"Median of {args.repeat} runs, each in a fresh process. Drain: N no-op jobs enqueued first, one consumer at "
        f"concurrency {CONCURRENCY}; jobs/s timed inside the jobs. Latency: {args.rounds} sequential enqueue→result "
        f"round trips after {args.warmup} warm-ups, consumer already running in-process. Ratios: drain = jobkit "
        f"jobs/s / peer's; p50 = peer's p50 / jobkit's (above 1: jobkit ahead). Peer rows at default settings; "
        f"`1 ms polling` rows are latency only.\n\n"
        f"{table(measured)}\n## Producing and consuming at once (e2e)\n\nConsumer started first, then one awaited "
        f"add per job; jobs/s = N / (first add -> last job end).\n\n{e2e_table(measured)}\n"
        f"## Targets\n\n{goal_table}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory-n", type=int, default=20_000, help="jobs drained on memory storage")
    parser.add_argument("--sqlite-n", type=int, default=5_000, help="jobs drained on SQLite")
    parser.add_argument("--peer-cap", type=int, default=None, help="cap the peers' N (rates stay comparable)")
    parser.add_argument("--rounds", type=int, default=300, help="timed latency round trips")
    parser.add_argument("--warmup", type=int, default=10, help="untimed latency round trips first")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--targets", type=lambda s: s.split(","), default=list(TARGETS),
                        help="comma-separated, from: " + ", ".join(TARGETS))
    parser.add_argument("--child-timeout", type=float, default=900.0)
    parser.add_argument("--profile", metavar="TARGET", choices=[t for t in TARGETS if t.startswith("jobkit-")],
                        help="profile one jobkit measurement instead of comparing")
    parser.add_argument("--metric", choices=["drain", "e2e", "latency", "add"], default="drain",
                        help="with --profile (and for the child processes)")
    parser.add_argument("--profiler", choices=["cprofile", "pyinstrument"], default="cprofile")
    parser.add_argument("--top", type=int, default=30, help="functions listed per cProfile table")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    if args.child:
        child(args)
    elif args.profile:
        args.target = args.profile
        args.n = args.memory_n if args.profile.startswith("jobkit-memory") else args.sqlite_n
        with tempfile.TemporaryDirectory(prefix="jobkit-bench-") as workdir:
            text = profiled(args, workdir)
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"profile-{args.profile}-{args.metric}-{args.profiler}-{args.stamp}.txt"
        path.write_text(text)
        print(text, f"\nwritten: {path.relative_to(HERE.parent)}", sep="")
    else:
        run_comparison(args)


def run_comparison(args: argparse.Namespace) -> None:
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}: use {', '.join(TARGETS)}")
    missing = [m for m in ("jobkit", "huey", "taskiq") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)} in {sys.executable}; set up the benchmark venv:\n  {INSTALL}")
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, SQLite {info['sqlite']}", flush=True)
    info["load_before"] = os.getloadavg()[0]
    if info["load_before"] > 0.5:
        print(f"warning: load average {info['load_before']:.2f} before starting: other work on this machine will"
              " make the figures noisy", flush=True)
    measured = compare(args)
    info["load_after"] = os.getloadavg()[0]
    text = report(measured, info, args)
    RESULTS.mkdir(exist_ok=True)
    base = RESULTS / f"local-{args.stamp}"
    _, checks = goals(measured)
    settings = {k: getattr(args, k) for k in ("memory_n", "sqlite_n", "peer_cap", "rounds", "warmup", "repeat")}
    data = {"stamp": args.stamp, "machine": info, "settings": settings | {"concurrency": CONCURRENCY},
            "results": measured, "goals": checks}
    base.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    base.with_suffix(".md").write_text(text)
    print("\n" + text)
    print(f"written: {base.relative_to(HERE.parent)}.json and .md")


if __name__ == "__main__":
    main()
