"""The `jobkit` command: worker, status, jobs, schedules, demo."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from datetime import timedelta
from typing import Any

from . import __version__, cli_webhooks, schedules
from .backends import Backend
from .cli_logging import LEVELS, configure_logging, log_all_from_env
from .config import connect, mask_url, resolve_url
from .errors import ConfigError, JobkitError, JobNotFound
from .health import health
from .metrics import collect_metrics
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
                    prefetch=args.prefetch, lease=args.lease, grace=args.grace)
    try:
        await worker.run()
    finally:
        await shutdown()
    return 0


async def _admin_backend(args: argparse.Namespace) -> Backend:
    """The backend an admin command works on: an existing one, never a new SQLite file or directory."""
    return await connect(args.url, create=False)


async def _status(args: argparse.Namespace) -> int:
    from .cli_views import METRICS_SPAN, console, print_json, status_view  # rich only for commands that print

    backend = await _admin_backend(args)
    try:
        now = time.time()
        workers = await backend.workers(now)
        counts = {name: await backend.counts(name) for name in await backend.queues()}
        metrics = {m.queue: m for m in await collect_metrics(
            list(counts), since=timedelta(minutes=METRICS_SPAN), backend=backend) if m.task is None}
        report = await health(backend)
    finally:
        await backend.close()
    if args.json:
        print_json({"backend": mask_url(backend.url), "workers": [w.model_dump(mode="json") for w in workers],
                    "queues": {q: c.model_dump(mode="json", by_alias=True) for q, c in counts.items()},
                    "metrics": {q: m.model_dump(mode="json") for q, m in metrics.items()},
                    "health": report.model_dump(mode="json", by_alias=True)})
    else:
        console().print(status_view(mask_url(backend.url), workers, counts, now, metrics))
        print(f"health: {report.status}" + "".join(f"\n  {p}" for p in report.problems))
    return 0


async def _jobs(args: argparse.Namespace) -> int:
    backend = await _admin_backend(args)
    try:
        return await _job_action(args, Queue(args.queue, backend=backend))
    except JobNotFound as exc:
        print(f"jobkit: {exc}", file=sys.stderr)
        return 1
    finally:
        await shutdown()
        await backend.close()


async def _job_action(args: argparse.Namespace, q: Queue) -> int:
    from .cli_views import console, job_card, jobs_table, print_json

    if args.action == "list":
        jobs = await q.jobs(state=args.state, name=args.name, worker=args.worker, owner=args.owner, tag=args.tag,
                            limit=args.limit, offset=args.offset)
        if args.json:
            print_json([j.model_dump(mode="json") for j in jobs])
        else:
            out = console()
            out.print(jobs_table(q.name, jobs, time.time(), out.width))
    elif args.action == "show":
        job = await q.get(args.job_id)
        if job is None:
            raise JobNotFound(f"no job {args.job_id!r} in queue {q.name!r}")
        if args.json:
            print_json(job.model_dump(mode="json"))
        else:
            console().print(job_card(job, time.time()))
    elif args.action == "cancel":
        print((await q.cancel(args.job_id)).state.value)
    elif args.action == "retry" and args.job_id:
        if not await q.retry(args.job_id):
            job = await q.get(args.job_id)
            if job is None:
                raise JobNotFound(f"no job {args.job_id!r} in queue {q.name!r}")
            print(f"jobkit: job {args.job_id!r} in queue {q.name!r} is {job.state.value}: only failed or cancelled"
                  " jobs can be retried", file=sys.stderr)
            return 1
        print("retried 1 job")
    elif args.action == "retry":
        print(f"retried {await q.retry_failed()} job(s)")
    elif args.action == "clean":
        print(f"removed {await q.clean(args.state or JobState.COMPLETED, older_than=args.older_than)} job(s)")
    return 0


async def _schedules(args: argparse.Namespace) -> int:
    from .cli_views import console, print_json, schedules_view

    backend = await _admin_backend(args)
    try:
        names = [args.queue] if args.queue else await schedules.list_queues(backend)
        found = [s for name in names for s in await Queue(name, backend=backend).list_schedules()]
    finally:
        await backend.close()
    now = time.time()
    if args.json:
        print_json([{**s.model_dump(mode="json"), "next": [schedules.tick_id(s.id, at).partition("@")[2]
                                                            for at in schedules.upcoming(s, args.next, now)]}
                    for s in found])
    else:
        out = console()
        out.print(schedules_view(args.queue, found, args.next, now, out.width))
    return 0


async def _spool(args: argparse.Namespace) -> int:
    from . import spool

    if args.action == "status":
        waiting = spool.targets()
        for target, count in waiting.items():
            print(f"{count} job(s) for {target}")
        print(f"{sum(waiting.values())} job(s) in {spool.spool_path()}")
        return 0
    backend = await connect(args.url or resolve_url()[0])  # the URL itself: no fallback to SQLite here
    try:
        done = await spool.forward(backend)
    finally:
        await backend.close()
    print(f"forwarded {done} job(s) to {mask_url(backend.url)}")
    for target, count in spool.targets().items():
        print(f"{count} job(s) left for {target}: flush with --url for that backend")
    return 0


def _logging_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--log-level and --log-all, before or after the subcommand: the subcommands' copies default to SUPPRESS,
    so they override the top-level value only when given."""
    level_default = os.environ.get("JOBKIT_LOG_LEVEL", "INFO").upper() if top else argparse.SUPPRESS
    parser.add_argument("--log-level", type=str.upper, choices=LEVELS, default=level_default,
                        help="jobkit's log level (default: JOBKIT_LOG_LEVEL, else INFO)")
    parser.add_argument("--log-all", action="store_true", default=log_all_from_env() if top else argparse.SUPPRESS,
                        help="let every library log at --log-level too (their debug lines may show payloads and"
                             " results); default: JOBKIT_LOG_ALL=1, else they log at WARNING")


def _serve_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], url_help: str,
                   ) -> list[argparse.ArgumentParser]:
    """`serve` and `tokens` (run by jobkit.serve, imported only then: it needs the `serve` extra)."""
    s = sub.add_parser("serve", help="run the HTTP API (needs the `serve` extra)")
    s.add_argument("modules", nargs="*", metavar="MODULE", help="task modules to import, so payloads are validated")
    s.add_argument("--url", help=url_help)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--config", help="a JSON file of ServeConfig fields (see docs/serve.md)")
    s.add_argument("--task", action="append", help="a task name clients may submit (repeatable)")
    s.add_argument("--tokens", help='a JSON file {"tokens": [{"sha256": ..., "owner": ...}]}')
    s.add_argument("--upload-root", help="folder for uploaded files (uploads are refused without one)")
    s.add_argument("--webhooks", action="store_true",
                   help="also send the webhooks' outbox in this process (as `jobkit webhooks run` does)")
    s.add_argument("--webhook-allow", action="append", metavar="ADDRESS",
                   help="a private address, network or host name webhooks may call (repeatable)")
    t = sub.add_parser("tokens", help="add or remove API tokens of `jobkit serve` (stored hashed in the backend)")
    t.add_argument("action", choices=["add", "remove"])
    t.add_argument("token", nargs="?", help="remove: the token, or its sha256")
    t.add_argument("--url", help=url_help)
    t.add_argument("--owner", help="add: whose jobs the token sees")
    t.add_argument("--admin", action="store_true", help="add: a token for every job and the queue operations")
    return [s, t]


def _serve_command(args: argparse.Namespace) -> int:
    try:
        from .serve import _cli
    except ImportError as exc:
        raise ConfigError(f"`jobkit {args.command}` needs the serve extra: pip install 'jobkit[serve]' ({exc})"
                          ) from None
    if args.command == "tokens":
        return asyncio.run(_cli.tokens(args))
    _import_modules(args.modules)
    return _cli.serve(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobkit", description="jobkit: run and inspect job queues")
    _logging_options(p, top=True)
    p.add_argument("--version", action="version", version=f"jobkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    url_help = "backend URL (default: JOBKIT_URL, REDIS_URL, then sqlite:///.jobkit/jobs.db)"
    json_help = "print JSON (the models' fields) for machines instead of a table"

    w = sub.add_parser("worker", help="run a worker for the tasks defined in MODULE(s)")
    w.add_argument("modules", nargs="+", metavar="MODULE")
    w.add_argument("--url", help=url_help)
    w.add_argument("--queue", "-q", action="append",
                   help="serve this queue (repeatable; default: the tasks' own queues)")
    w.add_argument("--concurrency", "-c", type=int, default=10)
    w.add_argument("--prefetch", type=int, default=None, metavar="N",
                   help="jobs claimed ahead of free slots while jobs are short (default: by backend and concurrency;"
                        " 0: none)")
    w.add_argument("--lease", type=float, default=30.0, help="seconds a claimed job stays ours without renewal")
    w.add_argument("--grace", type=float, default=30.0, help="seconds running jobs get to finish on SIGTERM")
    w.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop: uvloop (the `uvloop` extra) is faster; auto uses it when installed")
    w.add_argument("--processes", "-p", default="1", metavar="N",
                   help="worker processes under one supervisor that restarts a crashed one and passes SIGTERM/SIGINT"
                        " on (default 1: this process is the worker; auto: one per CPU core)")

    s = sub.add_parser("status", help="queues, their counts, and live workers")
    s.add_argument("--url", help=url_help)
    s.add_argument("--json", action="store_true", help=json_help)

    j = sub.add_parser("jobs", help="list, show, cancel, retry or clean jobs of a queue")
    j.add_argument("action", choices=["list", "show", "cancel", "retry", "clean"])
    j.add_argument("queue")
    j.add_argument("job_id", nargs="?")
    j.add_argument("--url", help=url_help)
    j.add_argument("--state", choices=[s.value for s in JobState], metavar="STATE",
                   help="only jobs in this state: " + ", ".join(s.value for s in JobState))
    j.add_argument("--name", help="only jobs of this task")
    j.add_argument("--worker", help="only jobs whose lease this worker holds (running on it)")
    j.add_argument("--owner", help="only jobs of this owner (the user they are for)")
    j.add_argument("--tag", metavar="KEY=VALUE", help="only jobs with this tag")
    j.add_argument("--limit", type=int, default=50)
    j.add_argument("--offset", type=int, default=0)
    j.add_argument("--older-than", type=float, default=0.0, help="clean: seconds since the job finished")
    j.add_argument("--json", action="store_true", help=json_help)

    c = sub.add_parser("schedules", help="schedules of a queue (default: every queue) with their next fire times")
    c.add_argument("queue", nargs="?")
    c.add_argument("--url", help=url_help)
    c.add_argument("--next", type=int, default=5, help="how many next fire times to show (default 5)")
    c.add_argument("--json", action="store_true", help=json_help)

    sp = sub.add_parser("spool", help="jobs kept while their Redis did not answer (submit(..., degrade='spool'))")
    sp.add_argument("action", choices=["status", "flush"], help="status: count them; flush: forward them now")
    sp.add_argument("--url", help="flush: the Redis to forward to (default: JOBKIT_URL, then REDIS_URL)")

    d = sub.add_parser("demo", help="run a few demo jobs with live progress in the terminal")
    d.add_argument("--url", help=url_help)
    h = cli_webhooks.add_parser(sub, url_help, json_help)
    for command in (w, s, j, c, sp, d, h, *_serve_parsers(sub, url_help)):
        _logging_options(command, top=False)
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


async def _supervise(args: argparse.Namespace, argv: Sequence[str], processes: int) -> int:
    from .supervisor import Supervisor, child_command

    _import_modules(args.modules)  # a module that cannot be imported fails here, once, not in every child
    if not registered():
        raise ConfigError(f"no tasks found in {', '.join(args.modules)}; decorate async functions with @jobkit.task")
    return await Supervisor(child_command(argv), processes, args.grace).run()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, everything=args.log_all, own=getattr(args, "modules", ()))
    try:
        if args.command == "demo":
            from .demo import main as demo_main

            logging.getLogger("jobkit").setLevel(logging.ERROR)  # the live rows say it all
            return demo_main(args.url)
        if args.command in ("serve", "tokens"):
            return _serve_command(args)
        if args.command == "jobs" and args.action in ("show", "cancel") and not args.job_id:
            raise ConfigError(f"`jobkit jobs {args.action}` needs a job id")
        if args.command == "worker":
            from .supervisor import parse_processes

            processes = parse_processes(args.processes)
            if processes > 1:
                return asyncio.run(_supervise(args, argv, processes))
        runner = {"worker": _worker, "status": _status, "jobs": _jobs, "schedules": _schedules,
                  "spool": _spool, "webhooks": cli_webhooks.run}[args.command]
        return _run_on_loop(runner(args), getattr(args, "loop", "asyncio"))
    except JobkitError as exc:
        print(f"jobkit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
