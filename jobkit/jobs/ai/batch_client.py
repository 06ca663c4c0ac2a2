"""The provider's Batch API over HTTP: upload a JSONL file, create a batch, read it, cancel it, download its files.

Every request goes through the live calls' policy: 429s wait (Retry-After) and spend no attempt, 5xx, timeouts and
resets are retried `retry.attempts` times with the backoff, 401/403/no quota stop the job (ProviderRefused), and
other 4xx stop it too (BatchRefused): a batch is refused whole. A create whose answer was lost is looked up by its
input file before it is sent again, so a batch is never created (and paid for) twice.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .client import CallFailed, Limits, _error_text, _httpx, _retry_after
from .errors import BatchRefused, ProviderRefused
from .models import Retry
from .providers import Provider

__all__ = ["BatchClient", "BatchUnavailable"]

ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
FIND_LIMIT = 100  # recent batches searched for one created by a request whose answer was lost


class BatchUnavailable(Exception):
    """The provider kept failing (5xx, timeouts) past the attempts: the job is retried later, the batch kept."""


class BatchClient:
    def __init__(self, provider: Provider, retry: Retry, timeout: float) -> None:
        httpx = self._httpx = _httpx()
        self.provider, self.retry = provider, retry
        self.base = provider.base_url
        self.client = httpx.AsyncClient(
            headers=provider.auth_headers(), params=dict(provider.query),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=httpx.AsyncHTTPTransport(retries=0), follow_redirects=False, trust_env=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- the endpoints -------------------------------------------------------------------------------------------
    async def upload(self, path: Path) -> str:
        """Upload a JSONL request file (purpose "batch"); its file id."""
        async def once() -> Any:
            with path.open("rb") as f:
                return await self._send("POST", "/files", data={"purpose": "batch"},
                                        files={"file": (path.name, f, "application/jsonl")})

        return _field(await self._policy(once, "upload the batch file"), "id")

    async def create(self, file_id: str) -> dict[str, Any]:
        """Create the batch of an uploaded file; after a lost answer, the batch that request made, if it did."""
        body = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": WINDOW}
        lost = False

        async def once() -> Any:
            nonlocal lost
            if lost and (found := await self.find(file_id)) is not None:
                return found
            try:
                return await self._send("POST", "/batches", json=body)
            except CallFailed as failed:
                lost = lost or failed.billed_unknown
                raise

        return dict(await self._policy(once, "create the batch"))

    async def get(self, batch_id: str) -> dict[str, Any]:
        return dict(await self._policy(lambda: self._send("GET", f"/batches/{batch_id}"), "read the batch"))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return dict(await self._policy(lambda: self._send("POST", f"/batches/{batch_id}/cancel"),
                                       "cancel the batch"))

    async def find(self, file_id: str) -> dict[str, Any] | None:
        """The batch made from `file_id`, among the newest FIND_LIMIT, or None."""
        listed = await self._policy(lambda: self._send("GET", "/batches", params={"limit": FIND_LIMIT}),
                                    "list batches")
        data = listed.get("data") if isinstance(listed, dict) else None
        for batch in data if isinstance(data, list) else []:
            if isinstance(batch, dict) and batch.get("input_file_id") == file_id:
                return batch
        return None

    async def download(self, file_id: str, path: Path) -> None:
        """Write the content of file `file_id` to `path`, streamed."""
        async def once() -> None:
            async with self.client.stream("GET", f"{self.base}/files/{file_id}/content") as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    self._raise(resp)
                with path.open("wb") as f:
                    async for chunk in resp.aiter_bytes():
                        f.write(chunk)

        await self._policy(lambda: self._transport(once()), f"download file {file_id}")

    # -- the policy ----------------------------------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kw: Any) -> Any:
        async def once() -> Any:
            resp = await self.client.request(method, self.base + path, **kw)
            if resp.status_code != 200:
                self._raise(resp)
            try:
                return json.loads(resp.content)
            except ValueError:
                raise CallFailed("retry", "the provider answered 200 with a body that is not JSON", status=200,
                                 billed_unknown=True) from None

        return await self._transport(once())

    async def _transport(self, request: Any) -> Any:
        httpx = self._httpx
        try:
            return await request
        except httpx.TimeoutException as exc:
            raise CallFailed("retry", f"no answer within the request timeout ({type(exc).__name__})",
                             billed_unknown=not isinstance(exc, httpx.ConnectTimeout)) from None
        except httpx.TransportError as exc:
            raise CallFailed("retry", f"connection failed: {type(exc).__name__}: {exc}"[:300],
                             billed_unknown=not isinstance(exc, httpx.ConnectError)) from None

    def _raise(self, resp: Any) -> None:
        status = resp.status_code
        message, code = _error_text(resp.content)
        said = f"HTTP {status} from the provider: {message}" if message else f"HTTP {status} from the provider"
        limits = Limits.of(resp.headers)
        if status == 429 and code != "insufficient_quota":
            raise CallFailed("rate", said, status=status, wait=_retry_after(resp.headers), limits=limits)
        if status in (401, 403) or code == "insufficient_quota":
            raise CallFailed("fatal", said, status=status, limits=limits)
        if 400 <= status < 500 and status not in (408, 409):
            raise CallFailed("item", said, status=status, limits=limits)
        raise CallFailed("retry", said, status=status, wait=_retry_after(resp.headers), limits=limits)

    async def _policy(self, once: Any, what: str) -> Any:
        attempt, rate_waited = 1, 0.0
        while True:
            try:
                return await once()
            except CallFailed as failed:
                if failed.kind == "fatal":
                    raise ProviderRefused(f"{failed}: fix the key or the account of provider {self.provider.name!r},"
                                          " then retry the job (results already in the sink are kept)") from None
                if failed.kind == "item":
                    raise BatchRefused(f"could not {what}: {failed}") from None
                if failed.kind == "rate":
                    wait = failed.wait if failed.wait is not None else self.retry.backoff.seconds(attempt)
                    rate_waited += wait
                    if rate_waited > self.retry.max_rate_wait:
                        raise BatchUnavailable(f"could not {what}: {failed}; the provider kept refusing for over"
                                               f" {self.retry.max_rate_wait:g}s") from None
                    await asyncio.sleep(wait)
                    continue
                if attempt >= self.retry.attempts:
                    raise BatchUnavailable(f"could not {what}: {failed} (attempt {attempt} of"
                                           f" {self.retry.attempts})") from None
                await asyncio.sleep(max(self.retry.backoff.seconds(attempt), failed.wait or 0.0))
                attempt += 1


def _field(data: Any, name: str) -> str:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise BatchUnavailable(f"the provider's answer has no {name!r}: {str(data)[:200]}")
    return value
