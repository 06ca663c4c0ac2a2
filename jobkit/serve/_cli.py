"""`jobkit serve` (run the API with uvicorn) and `jobkit tokens add|remove` (backend-stored API tokens)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import connect
from ..errors import ConfigError
from ._app import app
from ._auth import add_token, remove_token
from ._config import ServeConfig

__all__ = ["serve", "tokens"]


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
    config = ServeConfig.model_validate({**base.model_dump(), **changes})
    if not config.tasks:
        print("jobkit serve: no task may be submitted (give --task NAME, or `tasks` in --config); reads work")
    return config


def serve(args: argparse.Namespace) -> int:
    """Run the API until interrupted."""
    import uvicorn

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
