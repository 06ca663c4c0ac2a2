"""`jobkit serve`: an owner-scoped HTTP API over the queues (Starlette; the `jobkit[serve]` extra).

    jobkit serve --task report --tokens tokens.json --port 8000
    app = jobkit.serve.app(tasks={"report"}, tokens_file="tokens.json")  # an ASGI app to mount in yours

Also the webhooks' outbox sender: `jobkit webhooks run`, or `await jobkit.serve.WebhookSender(backend).run()`.
"""

from __future__ import annotations

try:
    import sse_starlette  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(f"jobkit.serve needs the `serve` extra: pip install 'jobkit[serve]' ({exc})") from None

from ._app import app, routes
from ._auth import Principal, add_token, hash_token, new_token, principal, remove_token
from ._config import ServeConfig, TokenEntry
from .webhooks import RETRY_SCHEDULE, WebhookSender

__all__ = [
    "RETRY_SCHEDULE",
    "Principal",
    "ServeConfig",
    "TokenEntry",
    "WebhookSender",
    "add_token",
    "app",
    "hash_token",
    "new_token",
    "principal",
    "remove_token",
    "routes",
]
