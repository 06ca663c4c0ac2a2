"""One chat-completions request over a kept-alive async HTTP client, its answer or a classified failure.

httpx2 (Pydantic's maintained continuation of httpx) where it installs (Python 3.11+), else httpx; the transport's
own retries are off, so every retry goes through the job's policy and is counted.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import AISetupError
from .providers import Provider

__all__ = ["Answer", "CallFailed", "ChatClient", "Limits", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
Kind = Literal["rate", "retry", "item", "fatal"]


def _httpx() -> Any:
    try:
        import httpx2

        return httpx2
    except ImportError:
        pass
    try:
        import httpx

        return httpx
    except ImportError:
        raise AISetupError("the AI jobs need an HTTP client in the worker: pip install 'jobkit[ai]'") from None


def parse_duration(text: str | None) -> float | None:
    """Seconds in "20ms", "1.5s", "6m0s", "1h2m" or a plain number; None when absent or unreadable."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _retry_after(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(headers: Any, name: str) -> float | None:
    try:
        return float(headers[name]) if name in headers else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Limits:
    """What the provider's x-ratelimit-* headers said is left, and when each resets (seconds)."""

    requests_left: float | None = None
    requests_reset: float | None = None
    tokens_left: float | None = None
    tokens_reset: float | None = None

    @classmethod
    def of(cls, headers: Any) -> Limits:
        return cls(_number(headers, "x-ratelimit-remaining-requests"),
                   parse_duration(headers.get("x-ratelimit-reset-requests")),
                   _number(headers, "x-ratelimit-remaining-tokens"),
                   parse_duration(headers.get("x-ratelimit-reset-tokens")))


@dataclass(frozen=True)
class Answer:
    content: str
    tokens_in: int
    tokens_cached: int
    tokens_out: int
    finish_reason: str | None
    limits: Limits


class CallFailed(Exception):
    """A call that brought no usable answer. `kind`: "rate" (429: wait, no attempt spent), "retry" (5xx, timeout,
    reset, broken body: another attempt), "item" (400, 404, 422: this item cannot pass), "fatal" (401, 403, no
    quota: no item can). `billed_unknown`: the provider may have done (and billed) the work, but said nothing of it."""

    def __init__(self, kind: Kind, message: str, *, status: int | None = None, wait: float | None = None,
                 billed_unknown: bool = False, limits: Limits | None = None) -> None:
        super().__init__(message)
        self.kind, self.status, self.wait, self.billed_unknown = kind, status, wait, billed_unknown
        self.limits = limits or Limits()


def _error_text(body: bytes) -> tuple[str, str | None]:
    """The provider's own error message and code, from an OpenAI-style error body."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace").strip(), None
    if isinstance(err, dict):
        return str(err.get("message") or err)[:500], err.get("code") if isinstance(err.get("code"), str) else None
    return str(err)[:500], None


def _answer(data: Any, limits: Limits) -> Answer:
    """The answer in a 200 body; CallFailed("retry") when the body is not a chat completion."""
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return Answer(str(content), int(usage.get("prompt_tokens") or 0), int(details.get("cached_tokens") or 0),
                      int(usage.get("completion_tokens") or 0), choice.get("finish_reason"), limits)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise CallFailed("retry", "the provider answered 200 with a body that is not a chat completion",
                         status=200, billed_unknown=True, limits=limits) from None


def _written_hook(then: Callable[[], None]) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.complete"):  # "http11." or "http2."
            then()

    return trace


class ChatClient:
    """A kept-alive connection pool to one provider; `complete(body)` returns an Answer or raises CallFailed."""

    def __init__(self, provider: Provider, *, timeout: float, connections: int) -> None:
        httpx = self._httpx = _httpx()
        self.provider = provider
        self.url = provider.base_url + "/chat/completions"
        self.client = httpx.AsyncClient(
            headers={**provider.auth_headers(), "Content-Type": "application/json"}, params=dict(provider.query),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            transport=httpx.AsyncHTTPTransport(retries=0), follow_redirects=False, trust_env=False)

    async def complete(self, body: dict[str, Any], on_written: Callable[[], None] | None = None) -> Answer:
        """`on_written` is called once the request is on the wire (the transport's `trace` extension says so)."""
        httpx = self._httpx
        extensions = {} if on_written is None else {"trace": _written_hook(on_written)}
        try:
            resp = await self.client.post(self.url, content=json.dumps(body, separators=(",", ":")),
                                          extensions=extensions)
        except httpx.TimeoutException as exc:
            raise CallFailed("retry", f"no answer within the request timeout ({type(exc).__name__})",
                             billed_unknown=not isinstance(exc, httpx.ConnectTimeout)) from None
        except httpx.TransportError as exc:
            reached = not isinstance(exc, httpx.ConnectError)
            raise CallFailed("retry", f"connection failed: {type(exc).__name__}: {exc}"[:300],
                             billed_unknown=reached) from None
        return self._read(resp)

    def _read(self, resp: Any) -> Answer:
        limits = Limits.of(resp.headers)
        status = resp.status_code
        if status == 200:
            try:
                data = json.loads(resp.content)
            except ValueError:
                raise CallFailed("retry", "the provider answered 200 with a body that is not JSON", status=200,
                                 billed_unknown=True, limits=limits) from None
            return _answer(data, limits)
        message, code = _error_text(resp.content)
        said = f"HTTP {status} from the provider: {message}" if message else f"HTTP {status} from the provider"
        if status == 429 and code != "insufficient_quota":
            raise CallFailed("rate", said, status=status, wait=_retry_after(resp.headers), limits=limits)
        if status in (401, 403) or code == "insufficient_quota":
            raise CallFailed("fatal", said, status=status, limits=limits)
        if status in (400, 404, 413, 422):
            raise CallFailed("item", said, status=status, limits=limits)
        raise CallFailed("retry", said, status=status, wait=_retry_after(resp.headers), limits=limits)

    async def aclose(self) -> None:
        await self.client.aclose()
