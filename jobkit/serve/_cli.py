"""`jobkit serve` (run the API with uvicorn) and `jobkit tokens add|remove` (backend-stored API tokens)."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from ..config import connect
from ..errors import ConfigError
from ._app import app
from ._auth import add_token, remove_token
from ._config import ServeConfig

__all__ = ["HideTokens", "serve", "tokens"]

_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&]*")


def _config(args: argparse.Namespace) -> ServeConfig:
    base = ServeConfig.load(args.config) if args.config else ServeConfig()
    changes: dict[str, object] = {}
    if args.url:
        changes["url"] = args.url
    if args.task:
        changes["tasks"] = base.tasks | frozenset(args.task)
    if args.tokens:
        changes["tokens_file"] = Path(args.tokens)
    if args.upload_root:
        changes["upload_root"] = Path(args.upload_root)
    if args.webhooks:
        changes["webhooks"] = True
    if args.webhook_allow:
        changes["webhook_allow"] = (*base.webhook_allow, *args.webhook_allow)
    config = ServeConfig.model_validate({**base.model_dump(), **changes})
    if not config.tasks:
        print("jobkit serve: no task may be submitted (give --task NAME, or `tasks` in --config); reads work")
    return config


class HideTokens(logging.Filter):
    """Masks `token=...` in uvicorn's access log lines (the SSE route takes a token in its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "token=" in args[2]:
            record.args = (*args[:2], _TOKEN_IN_QUERY.sub(r"\1***", args[2]), *args[3:])
        return True


def serve(args: argparse.Namespace) -> int:
    """Run the API until interrupted."""
    import uvicorn

    logging.getLogger("uvicorn.access").addFilter(HideTokens())
    uvicorn.run(app(_config(args)), host=args.host, port=args.port, log_level=args.log_level.lower(),
                proxy_headers=False)
    return 0


async def tokens(args: argparse.Namespace) -> int:
    """Add a token (printed once: only its digest is stored) or remove one."""
    backend = await connect(args.url, create=args.action == "add")
    try:
        if args.action == "add":
            if not args.owner and not args.admin:
                raise ConfigError("a token is for an owner (--owner NAME) or an admin (--admin)")
            print(await add_token(backend, owner=args.owner, admin=args.admin))
            return 0
        if not args.token:
            raise ConfigError("`jobkit tokens remove` needs the token (or its sha256)")
        if not await remove_token(backend, args.token):
            print("jobkit: no such token in this backend")
            return 1
        print("removed")
        return 0
    finally:
        await backend.close()
