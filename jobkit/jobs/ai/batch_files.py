"""The Batch API's files: the JSONL request file a batch is made of (within the provider's limits, cut back to the
items the budget allows), and an index over the output and error files a batch leaves, read back line by line.

Each request's `custom_id` is `<item key, percent-escaped>/<section>`: a key holding "/" or "%" stays unambiguous.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from .client import Answer, CallFailed, Limits, _answer

__all__ = ["MAX_BYTES", "MAX_REQUESTS", "Outcome", "RequestFile", "ResultIndex", "custom_id", "outcome",
           "parse_custom_id"]

MAX_REQUESTS = 50_000  # requests per batch file (OpenAI's limit)
MAX_BYTES = 200 * 1024 * 1024  # bytes per batch file (OpenAI's limit)
NOT_RUN = ("batch_expired", "batch_cancelled")  # error codes of requests a batch ended before running


def custom_id(key: str, section: str) -> str:
    return f"{quote(key, safe='')}/{section}"


def parse_custom_id(text: str) -> tuple[str, str] | None:
    key, sep, section = text.rpartition("/")
    return (unquote(key), section) if sep and section.isidentifier() else None


@dataclass
class _Item:
    position: int
    offset: int  # file size after its lines
    requests: int  # requests in the file up to and including it
    worst: float  # worst-case cost of the file up to and including it


class RequestFile:
    """A request file being written; `fits` says whether an item's lines keep it within the provider's limits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("wb")
        self.items: list[_Item] = []

    @property
    def requests(self) -> int:
        return self.items[-1].requests if self.items else 0

    @property
    def worst(self) -> float:
        return self.items[-1].worst if self.items else 0.0

    @property
    def size(self) -> int:
        return self.items[-1].offset if self.items else 0

    def fits(self, lines: list[bytes]) -> bool:
        return (self.requests + len(lines) <= MAX_REQUESTS
                and self.size + sum(len(x) for x in lines) <= MAX_BYTES)

    def add(self, position: int, lines: list[bytes], worst: float) -> None:
        for line in lines:
            self.file.write(line)
        self.items.append(_Item(position, self.size + sum(len(x) for x in lines), self.requests + len(lines),
                                self.worst + worst))

    def keep(self, n: int) -> None:
        """Keep only the first `n` items (what the budget allows)."""
        del self.items[n:]
        self.file.flush()
        os.truncate(self.path, self.size)
        self.file.seek(self.size)

    def fitting(self, room: float) -> int:
        """How many of the first items fit in `room` dollars."""
        return sum(1 for item in self.items if item.worst <= room)

    def close(self) -> None:
        self.file.close()


def request_line(custom: str, body: dict[str, Any]) -> bytes:
    line = {"custom_id": custom, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@dataclass
class Outcome:
    """A request's outcome: `answer` (a completion), or `left` (the batch ended before it ran), or `error`."""

    answer: Answer | None = None
    left: bool = False
    error: str = ""
    status: int | None = None


class ResultIndex:
    """Where each custom_id's line is in the downloaded files, and the usage every line reports (what was billed)."""

    def __init__(self, price: Callable[[int, int, int], float]) -> None:
        self.price = price
        self.where: dict[str, tuple[Path, int]] = {}
        self.calls = self.tokens_in = self.tokens_cached = self.tokens_out = 0
        self.cost = 0.0
        self.stray: list[str] = []  # what was wrong with lines that name no request of this batch

    def add(self, path: Path) -> None:
        with path.open("rb") as f:
            offset = 0
            for n, raw in enumerate(f, 1):
                at, offset = offset, offset + len(raw)
                try:
                    line = json.loads(raw)
                except ValueError:
                    self._stray(f"{path.name} line {n} is not JSON")
                    continue
                cid = line.get("custom_id") if isinstance(line, dict) else None
                if not isinstance(cid, str):
                    self._stray(f"{path.name} line {n} has no custom_id")
                    continue
                self._count(line)
                self.where.setdefault(cid, (path, at))

    def _stray(self, why: str) -> None:
        if len(self.stray) < 20:
            self.stray.append(why)

    def _count(self, line: dict[str, Any]) -> None:
        response = line.get("response")
        body = response.get("body") if isinstance(response, dict) else None
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        details = usage.get("prompt_tokens_details")
        tokens_in, tokens_out = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        cached = min(tokens_in, _count(details.get("cached_tokens")) if isinstance(details, dict) else 0)
        self.calls += 1
        self.tokens_in += tokens_in
        self.tokens_cached += cached
        self.tokens_out += tokens_out
        self.cost += self.price(tokens_in, cached, tokens_out)

    def line(self, cid: str) -> dict[str, Any] | None:
        found = self.where.get(cid)
        if found is None:
            return None
        path, at = found
        with path.open("rb") as f:
            f.seek(at)
            line: dict[str, Any] = json.loads(f.readline())
            return line


def outcome(line: dict[str, Any] | None, ended_early: bool) -> Outcome:
    """What one request's line says. No line: not run if the batch ended early (expired, cancelled), else lost."""
    if line is None:
        return Outcome(left=True) if ended_early else Outcome(error="the provider's files have no line for this"
                                                              " request")
    error, response = line.get("error"), line.get("response")
    if isinstance(error, dict) and error.get("code") in NOT_RUN:
        return Outcome(left=True)
    if not isinstance(response, dict):
        said = error.get("message") if isinstance(error, dict) else None
        return Outcome(error=f"the provider's line for this request has no response: {str(said or error)[:300]}")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        err = body.get("error") if isinstance(body, dict) else None
        message = err.get("message") if isinstance(err, dict) else err
        return Outcome(error=f"HTTP {status} from the provider: {str(message)[:300]}",
                       status=status if isinstance(status, int) else None)
    try:
        return Outcome(answer=_answer(body, Limits()))
    except CallFailed:
        return Outcome(error="the provider's line for this request is not a chat completion", status=200)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
