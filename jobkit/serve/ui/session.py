"""Who is looking at the dashboard: the API token kept in a cookie, the viewer it maps to, and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["COOKIE", "Authenticate", "Viewer", "csrf_for", "csrf_ok", "forget", "remember", "token_of"]

COOKIE = "jobkit_token"


class Viewer(Protocol):
    """What the dashboard needs of an authenticated token: whose jobs it sees, and whether it may act."""

    @property
    def owner(self) -> str | None: ...

    @property
    def admin(self) -> bool: ...


Authenticate = Callable[[str], Awaitable["Viewer | None"]]


def token_of(request: Request) -> str | None:
    return request.cookies.get(COOKIE) or None


def remember(response: Response, request: Request, token: str) -> None:
    """Keep `token` in a cookie the page's script cannot read, sent back only by this site's own pages."""
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")


def forget(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def csrf_for(token: str) -> str:
    """The form field every POST must carry: derived from the session's token, so another site cannot forge it."""
    return hashlib.sha256(b"jobkit-ui-csrf\0" + token.encode()).hexdigest()[:32]


def csrf_ok(token: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(csrf_for(token), given)
