"""Who is calling: an API token (hashed, from the config, its tokens file or the backend) -> an owner or an admin.

Tokens are stored only as SHA-256 digests; a token is long and random (`new_token`), so a plain digest is enough.
A request shows its token as `Authorization: Bearer <token>` or the `jobkit_token` cookie; only the SSE route
also takes `?token=` (a browser's EventSource cannot set headers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from ..backends import Backend
from ..errors import ConfigError
from ._config import ServeConfig, TokenEntry

__all__ = ["Principal", "TokenStore", "add_token", "hash_token", "new_token", "principal", "remove_token"]

TOKENS_QUEUE = "jobkit-serve"  # records of API tokens live under this queue name in the backend
TOKEN_KIND = "api-token"
CACHE_SECONDS = 5.0  # a token removed from the backend stops working within this long
COOKIE = "jobkit_token"


@dataclass(frozen=True)
class Principal:
    """The caller: an owner sees only that owner's jobs; an admin sees every job and may operate queues."""

    owner: str | None
    admin: bool

    @property
    def scope(self) -> str | None:
        """The owner every read is filtered by (None: an admin without an owner of its own sees everything)."""
        return None if self.admin else self.owner


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random API token (256 bits, URL-safe)."""
    return "jk_" + secrets.token_urlsafe(32)


async def add_token(backend: Backend, *, owner: str | None = None, admin: bool = False) -> str:
    """Make a token for `owner` (or an admin one), store its digest in the backend, and return the token itself."""
    token = new_token()
    entry = TokenEntry(sha256=hash_token(token), owner=owner, admin=admin)
    await backend.write_record(TOKENS_QUEUE, TOKEN_KIND, entry.sha256, entry.model_dump_json())
    return token


async def remove_token(backend: Backend, token_or_digest: str) -> bool:
    """Revoke a backend-stored token, given the token or its digest; False if there was none."""
    digest = token_or_digest if len(token_or_digest) == 64 else hash_token(token_or_digest)
    if await backend.read_record(TOKENS_QUEUE, TOKEN_KIND, digest) is None:
        return False
    await backend.write_record(TOKENS_QUEUE, TOKEN_KIND, digest, None)
    return True


class TokenStore:
    """Looks tokens up in the config, its tokens file, then the backend (with a short cache)."""

    def __init__(self, config: ServeConfig, backend: Backend) -> None:
        self.config, self.backend = config, backend
        self._cache: dict[str, tuple[float, TokenEntry | None]] = {}

    async def lookup(self, token: str) -> TokenEntry | None:
        digest = hash_token(token)
        for listed in (*self.config.tokens, *self.config.file_tokens()):
            if hmac.compare_digest(listed.sha256, digest):
                return listed
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self.backend.read_record(TOKENS_QUEUE, TOKEN_KIND, digest)
        entry = TokenEntry.model_validate(json.loads(record.value)) if record is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_SECONDS, entry)
        return entry


def _presented(conn: HTTPConnection, query_ok: bool) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if conn.cookies.get(COOKIE):
        return conn.cookies[COOKIE]
    if query_ok and conn.query_params.get("token"):
        return conn.query_params["token"]
    return None


async def principal(conn: HTTPConnection, *, admin: bool = False, query_ok: bool = False) -> Principal:
    """The caller of this request: 401 without a known token, 403 when `admin` is needed and it is not one."""
    token = _presented(conn, query_ok)
    if token is None:
        raise HTTPException(401, "no API token: send `Authorization: Bearer <token>`",
                            headers={"WWW-Authenticate": "Bearer"})
    store: TokenStore = conn.app.state.jobkit.tokens
    try:
        entry = await store.lookup(token)
    except ConfigError as exc:  # the server's own setup is broken, not the request
        raise HTTPException(503, f"{exc}") from None
    if entry is None:
        raise HTTPException(401, "unknown API token: ask an admin for one (`jobkit serve token add --owner NAME`)",
                            headers={"WWW-Authenticate": "Bearer"})
    if admin and not entry.admin:
        raise HTTPException(403, "this operation needs an admin token")
    return Principal(owner=entry.owner, admin=entry.admin)
