"""`FakeLLM`: an OpenAI-compatible chat completions server on 127.0.0.1, for tests, notebooks and benchmarks.

It runs (Starlette on uvicorn, in a thread of its own) with no network and no key, and misbehaves on demand as real
providers do: latency, rate limits with and without x-ratelimit-* headers, 429 bursts, 5xx, answers slower than the
client's timeout, dropped connections, bodies that are not JSON, output that does not match the schema, refused keys,
exhausted quota, and usage with cached prompt tokens. It speaks the Batch API too (`llm.batches`, see
testing_batches.py): the same faults apply to each line of a batch, billed at `batch_factor` of the price.
It ships in the package (not under tests/) so a notebook or a user's own test can start one: `pip install starlette
uvicorn` (both come with jobkit[ai]).

    with FakeLLM(latency=0.05) as llm:
        configure_provider("default", base_url=llm.base_url, api_key="test-key")
        llm.when("poison", "400")             # any prompt containing "poison" is refused
        llm.fail_next("429", times=3)         # the next three calls are rate-limited
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..._loopback import LoopbackServer
from .testing_batches import BatchAPI

__all__ = ["FAULTS", "FakeLLM", "tokens_of"]

FAULTS = ("429", "429-bare", "quota", "500", "503", "slow", "reset", "malformed", "invalid", "400", "401", "403", "404")


def tokens_of(text: str) -> int:
    """The server's token count of a text: a token per 4 bytes, as English text roughly runs."""
    return math.ceil(len(text.encode()) / 4)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(tokens_of(str(m.get("content") or "")) + 4 for m in messages) + 3


@dataclass
class _Rule:
    fault: str
    text: str | None  # applies to calls whose messages contain it; None: to the next calls
    times: int | None  # calls it applies to; None: all
    seconds: float = 0.0  # Retry-After of a 429, or the delay of "slow"


@dataclass
class Billed:
    """A call the server answered 200 (and a provider would bill): its usage."""

    at: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    model: str
    batch: bool = False  # answered through the Batch API (billed at the batch price)


@dataclass
class _Window:
    """The server's own sliding-window limit (requests or tokens per minute)."""

    limit: int
    span: float = 60.0
    seen: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    def used(self, now: float) -> int:
        while self.seen and self.seen[0][0] <= now - self.span:
            self.seen.popleft()
        return sum(n for _, n in self.seen)

    def reset_in(self, now: float) -> float:
        return max(0.001, self.seen[0][0] + self.span - now) if self.seen else 0.001


def _example(schema: dict[str, Any], defs: dict[str, Any], hint: str) -> Any:
    """A value matching a (simple) JSON schema: what a model asked for structured output returns."""
    if "$ref" in schema:
        return _example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, hint)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _example(schema["anyOf"][0], defs, hint)
    kind = schema.get("type")
    if kind == "object":
        return {name: _example(sub, defs, f"{name} of {hint}") for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_example(schema.get("items", {}), defs, hint) for _ in range(max(1, schema.get("minItems", 2)))]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return hint[:80]


class FakeLLM:
    """The server; `start()` / `stop()` (or `with`). Counters (`calls`, `billed`, `statuses`) are read while it runs."""

    def __init__(self, *, latency: float = 0.0, api_key: str | None = "test-key",
                 requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                 limit_headers: bool = True, reply: Callable[[dict[str, Any]], str] | None = None,
                 window: float = 60.0, batch_factor: float = 0.5) -> None:
        """`requests_per_minute` and `tokens_per_minute` are enforced over sliding windows of `window` seconds
        (shorter in a test that would otherwise take minutes); Batch API lines are billed at `batch_factor`."""
        self.latency = latency
        self.api_key = api_key
        self.limit_headers = limit_headers
        self.reply = reply
        self.rpm = None if requests_per_minute is None else _Window(requests_per_minute, window)
        self.tpm = None if tokens_per_minute is None else _Window(tokens_per_minute, window)
        self.accepted: list[float] = []  # time.time() of each request the rate limits let through
        self.rules: list[_Rule] = []
        self.calls = 0
        self.billed: list[Billed] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.seen_systems: set[str] = set()
        self.lock = threading.RLock()
        self.batch_factor = batch_factor
        self.batches = BatchAPI(self)
        self.port = 0
        self._server: LoopbackServer | None = None

    # -- control -------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def when(self, text: str, fault: str, *, times: int | None = None, seconds: float = 0.0) -> None:
        """Calls whose messages contain `text` meet `fault` (one of FAULTS), `times` times (None: always)."""
        self._add(_Rule(fault, text, times, seconds))

    def fail_next(self, fault: str, *, times: int = 1, seconds: float = 0.0) -> None:
        """The next `times` calls meet `fault` (a 429's Retry-After, or a "slow" answer's delay, is `seconds`)."""
        self._add(_Rule(fault, None, times, seconds))

    def _add(self, rule: _Rule) -> None:
        if rule.fault not in FAULTS:
            raise ValueError(f"unknown fault {rule.fault!r}: one of {', '.join(FAULTS)}")
        with self.lock:
            self.rules.append(rule)

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def cost(self, price: Callable[[int, int, int], float]) -> float:
        """What every answered call cost, at `price(tokens_in, cached, tokens_out)` (batch lines at `batch_factor`
        of it): what a provider would bill."""
        with self.lock:
            return sum(price(b.prompt_tokens, b.cached_tokens, b.completion_tokens)
                       * (self.batch_factor if b.batch else 1.0) for b in self.billed)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> FakeLLM:
        self._server = LoopbackServer(self._app(), name="fake LLM server", timeout_keep_alive=30)
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the endpoint --------------------------------------------------------------------------------------------
    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"]),
                                 Route("/chat/completions", self._complete, methods=["POST"]),
                                 *self.batches.routes()])

    def check_key(self, request: Any) -> Any:
        """None when the request carries the key; else the 401 answer."""
        if self.api_key is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ") or request.headers.get("api-key")
            if given != self.api_key:
                return self._status(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    def error(self, status: int, message: str, code: str | None) -> Any:
        return self._status(status, message, code)

    def batch_line(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One Batch API line through the completion logic: its status and response body."""
        messages = body.get("messages") or []
        rule = self._rule_for(messages)
        fault = rule.fault if rule else None
        status = {"400": 400, "401": 401, "403": 403, "404": 404, "quota": 429, "429": 429, "429-bare": 429,
                  "500": 500, "503": 503}.get(fault or "")
        if status is not None:
            with self.lock:
                self.statuses[status] += 1
            return status, {"error": {"message": f"fault {fault} for this request", "type": "fake_llm_error",
                                      "param": None, "code": None}}
        if fault == "malformed":
            return 200, {"id": "chatcmpl-x", "choices": "not a list of choices"}
        return 200, self._answer(body, messages, prompt_tokens(messages), fault == "invalid", batch=True)

    def _rule_for(self, messages: list[dict[str, Any]]) -> _Rule | None:
        text = "\n".join(str(m.get("content") or "") for m in messages)
        with self.lock:
            for rule in self.rules:
                if rule.text is None or rule.text in text:
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    return rule
        return None

    async def _complete(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        with self.lock:
            self.calls += 1
        if (refused := self.check_key(request)) is not None:
            return refused
        try:
            body = json.loads(await request.body())
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            return self._status(400, "We could not parse the JSON body of your request.", None)
        rule = self._rule_for(messages)
        fault, seconds = (rule.fault, rule.seconds) if rule else (None, 0.0)
        if fault in ("400", "403", "404"):
            return self._status(int(fault), f"fault {fault} for this prompt", None)
        if fault == "401":
            return self._status(401, "Incorrect API key provided.", "invalid_api_key")
        if fault == "quota":
            return self._status(429, "You exceeded your current quota.", "insufficient_quota")
        if fault in ("429", "429-bare"):
            headers = {} if fault == "429-bare" else {"retry-after": f"{seconds or 1:g}",
                                                      "x-ratelimit-remaining-requests": "0",
                                                      "x-ratelimit-reset-requests": f"{seconds or 1:g}s"}
            return self._status(429, "Rate limit reached for requests.", "rate_limit_exceeded", headers)
        if fault in ("500", "503"):
            return self._status(int(fault), "The server had an error while processing your request.", None)
        tokens_in = prompt_tokens(messages)
        limited = self._over_limit(tokens_in + int(body.get("max_tokens") or 0))
        if limited is not None:
            return limited
        delay = seconds if fault == "slow" else self.latency
        if delay:
            await asyncio.sleep(delay)
        if fault == "reset":
            return _Dropped()
        if fault == "malformed":
            return Response(b'{"id": "chatcmpl-x", "choices": [{"message": ', media_type="application/json",
                            headers=self._limit_headers())
        return JSONResponse(self._answer(body, messages, tokens_in, fault == "invalid"), headers=self._limit_headers())

    def _over_limit(self, tokens: int) -> Any:
        now = time.monotonic()
        with self.lock:
            for window, what, n in ((self.rpm, "requests", 1), (self.tpm, "tokens", tokens)):
                if window is not None and window.used(now) + n > window.limit:
                    reset = window.reset_in(now)
                    headers = ({f"x-ratelimit-remaining-{what}": "0", f"x-ratelimit-reset-{what}": f"{reset:.3f}s",
                                "retry-after": f"{math.ceil(reset)}"} if self.limit_headers else {})
                    return self._status(429, f"Rate limit reached for {what} per min.", "rate_limit_exceeded", headers)
            for window, n in ((self.rpm, 1), (self.tpm, tokens)):
                if window is not None:
                    window.seen.append((now, n))
            self.accepted.append(time.time())
        return None

    def _limit_headers(self) -> dict[str, str]:
        if not self.limit_headers:
            return {}
        now, out = time.monotonic(), {}
        with self.lock:
            for window, what in ((self.rpm, "requests"), (self.tpm, "tokens")):
                if window is not None:
                    out[f"x-ratelimit-limit-{what}"] = str(window.limit)
                    out[f"x-ratelimit-remaining-{what}"] = str(max(0, window.limit - window.used(now)))
                    out[f"x-ratelimit-reset-{what}"] = f"{window.reset_in(now):.3f}s"
        return out

    def _status(self, status: int, message: str, code: str | None, headers: dict[str, str] | None = None) -> Any:
        from starlette.responses import JSONResponse

        with self.lock:
            self.statuses[status] += 1
        return JSONResponse({"error": {"message": message, "type": "fake_llm_error", "param": None, "code": code}},
                            status_code=status, headers=headers)

    def _answer(self, body: dict[str, Any], messages: list[dict[str, Any]], tokens_in: int,
                invalid: bool, *, batch: bool = False) -> dict[str, Any]:
        user = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        fmt = body.get("response_format") or {}
        if invalid:
            content = "I am sorry, I cannot answer in JSON."
        elif self.reply is not None:
            content = self.reply(body)
        elif fmt.get("type") == "json_schema":
            schema = fmt["json_schema"]["schema"]
            content = json.dumps(_example(schema, schema.get("$defs", {}), user))
        else:
            content = f"Generated text for: {user}"
        limit = int(body.get("max_tokens") or 4096)
        finish = "stop"
        if tokens_of(content) > limit:
            content, finish = content.encode()[: limit * 4].decode("utf-8", "ignore"), "length"
        system = next((str(m.get("content")) for m in messages if m.get("role") == "system"), None)
        with self.lock:
            cached = 0
            if system is not None:
                cached = min(tokens_in, tokens_of(system) + 4) if system in self.seen_systems else 0
                self.seen_systems.add(system)
            tokens_out = tokens_of(content)
            self.billed.append(Billed(time.time(), tokens_in, cached, tokens_out, str(body.get("model")), batch))
            self.statuses[200] += 1
        return {"id": f"chatcmpl-{len(self.billed)}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out, "prompt_tokens_details": {"cached_tokens": cached}}}


class _Dropped:
    """A response that starts, then drops the connection mid-body (a reset, as the client sees it)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
        raise ConnectionResetError("the fake LLM dropped the connection")
