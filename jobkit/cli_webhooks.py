"""`jobkit webhooks run|list|replay|secret`: the outbox sender, and the deliveries of a queue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from .config import connect
from .errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], url_help: str,
               json_help: str) -> argparse.ArgumentParser:
    h = sub.add_parser("webhooks", help="send webhook deliveries (run), list them, replay one, or make a secret")
    h.add_argument("action", choices=["run", "list", "replay", "secret"])
    h.add_argument("delivery_id", nargs="?", help="replay: the delivery's id (see `list`)")
    h.add_argument("--url", help=url_help)
    h.add_argument("--queue", "-q", action="append",
                   help="run: send this queue's deliveries (repeatable; default every queue); list/replay: the queue")
    h.add_argument("--allow", action="append", metavar="ADDRESS",
                   help="run: an address, network (CIDR) or host name that may be private, e.g. 127.0.0.1 (repeatable;"
                        " default: JOBKIT_WEBHOOK_ALLOW, comma-separated)")
    h.add_argument("--state", choices=["pending", "delivered", "dead"], help="list: only deliveries in this state")
    h.add_argument("--job", help="list: only the deliveries of this job")
    h.add_argument("--limit", type=int, default=50)
    h.add_argument("--json", action="store_true", help=json_help)
    return h


async def run(args: argparse.Namespace) -> int:
    if args.action == "secret":
        from .serve._signing import new_secret

        print(new_secret())
        return 0
    if args.action == "run":
        return await _send(args)
    if not args.queue or len(args.queue) != 1:
        raise ConfigError(f"`jobkit webhooks {args.action}` needs one --queue")
    from .queue import Queue

    backend = await connect(args.url, create=False)
    try:
        q = Queue(args.queue[0], backend=backend)
        if args.action == "replay":
            if not args.delivery_id:
                raise ConfigError("`jobkit webhooks replay` needs a delivery id (see `jobkit webhooks list`)")
            d = await q.replay_webhook(args.delivery_id)
            print(f"delivery {d.id} of job {d.job_id} is pending again (webhook-id {d.message_id})")
            return 0
        found = await q.webhook_deliveries(state=args.state, job_id=args.job, limit=args.limit)
    finally:
        await backend.close()
    if args.json:
        from .cli_views import print_json

        print_json([d.model_dump(mode="json") for d in found])
        return 0
    for d in found:
        last = d.history[-1] if d.history else None
        said = "" if last is None else f"  last: {last.code or '-'} {last.error or ''}".rstrip()
        print(f"{d.id:>6}  {d.state:<9}  {d.attempts} tries  {d.event:<13}  job {d.job_id}  {d.url}{said}")
    return 0


async def _send(args: argparse.Namespace) -> int:
    from .serve.webhooks import WebhookSender

    backend = await connect(args.url, create=False)
    try:
        sender = WebhookSender(backend, queues=args.queue, allow=args.allow)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, sender.stop)
        await sender.run()
    finally:
        await backend.close()
    return 0
