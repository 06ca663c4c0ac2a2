"""The `jobkit` command: worker, status, jobs, demo."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from .config import get_backend, mask_url
from .errors import ConfigError, JobkitError
from .models import JobState
from .queue import Queue
from .run import shutdown
from .task import registered
from .worker import Worker

__all__ = ["main"]


def _import_modules(names: Sequence[str]) -> None:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import task module {name!r}: {exc}. Give a module path importable from the current"
                " directory, e.g. `jobkit worker myapp.tasks`"
            ) from exc


async def _worker(args: argparse.Namespace) -> int:
    _import_modules(args.modules)
    tasks = registered()  # all of them: a job of any task may be added to any queue the worker serves
    if not tasks:
        raise ConfigError(f"no tasks found in {', '.join(args.modules)}; decorate async functions with @jobkit.task")
    worker = Worker(tasks, backend=args.url, queues=args.queue or None, concurrency=args.concurrency,
                    lease=args.lease, grace=args.grace)
    try:
        await worker.run()
    finally:
        await shutdown()
    return 0


async def _status(args: argparse.Namespace) -> int:
    backend = await get_backend(args.url)
    now = time.time()
    print(f"backend: {mask_url(backend.url)}")
    workers = await backend.workers(now)
    print(f"workers: {len(workers)}")
    for w in workers:
        kind = " (embedded)" if w.embedded else ""
        print(f"  {w.id}{kind} queues={','.join(w.queues)} active={w.active}/{w.concurrency}")
    for name in await backend.queues():
        c = await backend.counts(name)
        paused = " PAUSED" if c.paused else ""
        print(f"queue {name}{paused}: waiting={c.waiting} delayed={c.delayed} active={c.active} "
              f"completed={c.completed} failed={c.failed} cancelled={c.cancelled}")
    await shutdown()
    return 0


async def _jobs(args: argparse.Namespace) -> int:
    q = Queue(args.queue, backend=args.url)
    try:
        if args.action == "list":
            for j in await q.jobs(state=args.state, name=args.name, limit=args.limit, offset=args.offset):
                err = f" error={j.error!r}" if j.error else ""
                print(f"{j.id} {j.name} {j.state.value} attempts={j.attempts} {j.progress.percent:.0f}%{err}")
        elif args.action == "show":
            job = await q.get(args.job_id)
            if job is None:
                print(f"no job {args.job_id!r} in queue {args.queue!r}", file=sys.stderr)
                return 1
            print(json.dumps(job.model_dump(mode="json"), indent=2))
        elif args.action == "cancel":
            print((await q.cancel(args.job_id)).state.value)
        elif args.action == "retry":
            n = int(await q.retry(args.job_id)) if args.job_id else await q.retry_failed()
            print(f"retried {n} job(s)")
        elif args.action == "clean":
            print(f"removed {await q.clean(args.state or JobState.COMPLETED, older_than=args.older_than)} job(s)")
    finally:
        await shutdown()
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobkit", description="jobkit: run and inspect job queues")
    p.add_argument("--log-level", default=os.environ.get("JOBKIT_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)
    url_help = "backend URL (default: JOBKIT_URL, REDIS_URL, then sqlite:///.jobkit/jobs.db)"

    w = sub.add_parser("worker", help="run a worker for the tasks defined in MODULE(s)")
    w.add_argument("modules", nargs="+", metavar="MODULE")
    w.add_argument("--url", help=url_help)
    w.add_argument("--queue", "-q", action="append",
                   help="serve this queue (repeatable; default: the tasks' own queues)")
    w.add_argument("--concurrency", "-c", type=int, default=10)
    w.add_argument("--lease", type=float, default=30.0, help="seconds a claimed job stays ours without renewal")
    w.add_argument("--grace", type=float, default=30.0, help="seconds running jobs get to finish on SIGTERM")
    w.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop: uvloop (the `uvloop` extra) is faster; auto uses it when installed")

    s = sub.add_parser("status", help="queues, their counts, and live workers")
    s.add_argument("--url", help=url_help)

    j = sub.add_parser("jobs", help="list, show, cancel, retry or clean jobs of a queue")
    j.add_argument("action", choices=["list", "show", "cancel", "retry", "clean"])
    j.add_argument("queue")
    j.add_argument("job_id", nargs="?")
    j.add_argument("--url", help=url_help)
    j.add_argument("--state")
    j.add_argument("--name")
    j.add_argument("--limit", type=int, default=50)
    j.add_argument("--offset", type=int, default=0)
    j.add_argument("--older-than", type=float, default=0.0, help="clean: seconds since the job finished")

    d = sub.add_parser("demo", help="run a few demo jobs with live progress in the terminal")
    d.add_argument("--url", help=url_help)
    return p


def _run_on_loop(main: Coroutine[Any, Any, int], loop: str) -> int:
    """asyncio.run on uvloop's loop when asked for (or, with "auto", when installed), else asyncio's own."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise ConfigError("--loop uvloop needs uvloop: pip install '.[uvloop]' in jobkit's checkout") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            from .demo import main as demo_main

            logging.getLogger("jobkit").setLevel(logging.ERROR)
            return demo_main(args.url)
        if args.command == "jobs" and args.action in ("show", "cancel") and not args.job_id:
            raise ConfigError(f"`jobkit jobs {args.action}` needs a job id")
        runner = {"worker": _worker, "status": _status, "jobs": _jobs}[args.command]
        return _run_on_loop(runner(args), getattr(args, "loop", "asyncio"))
    except JobkitError as exc:
        print(f"jobkit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
