"""FakeLLM's Batch API: `/v1/files` (upload, content) and `/v1/batches` (create, get, list, cancel), as OpenAI's.

A batch's lines go through the same completion logic as live calls (faults by prompt, structured output, cached
tokens), one after another in the server's loop: validating -> in_progress -> completed, or failed (the input is
refused), expired (only the first lines ran) or cancelled. Lines it answers are billed as batch calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .testing import FakeLLM

__all__ = ["BatchAPI", "FakeBatch"]

ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass
class FakeBatch:
    id: str
    input_file_id: str
    status: str = "validating"
    done: int = 0
    failed: int = 0
    total: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    cancel: bool = False
    created_at: int = field(default_factory=lambda: int(time.time()))

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "batch", "endpoint": "/v1/chat/completions",
                "input_file_id": self.input_file_id, "completion_window": "24h", "status": self.status,
                "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": self.created_at,
                "errors": {"object": "list", "data": self.errors} if self.errors else None,
                "request_counts": {"total": self.total, "completed": self.done, "failed": self.failed}}


class BatchAPI:
    """The Batch API half of a FakeLLM. Knobs (set by tests while the server runs):

    - `line_delay`: seconds each line takes; `hold`: a threading.Event: while it is clear, lines past the first
      `hold_after` of a batch wait (the batch stays in_progress)
    - `fail_polls`: how many of the next reads of a batch (GET /batches/{id}) answer 500
    - `lose_creates`: how many of the next creates make the batch, then drop the connection before answering
    - `expire_after`: lines a batch runs before it expires (None: never); `refuse`: a message failing every batch
    - `garbage`: raw lines appended to every output file (hostile or malformed lines)
    """

    def __init__(self, llm: FakeLLM) -> None:
        self.llm = llm
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.uploads = 0
        self.created = 0
        self.cancels = 0
        self.line_delay = 0.0
        self.hold = threading.Event()
        self.hold.set()
        self.hold_after = 0
        self.fail_polls = 0
        self.lose_creates = 0
        self.expire_after: int | None = None
        self.refuse: str | None = None
        self.garbage: list[bytes] = []
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[Any]:
        from starlette.routing import Route

        return [Route("/v1/files", self._upload, methods=["POST"]),
                Route("/v1/files/{id}/content", self._content, methods=["GET"]),
                Route("/v1/batches", self._create, methods=["POST"]),
                Route("/v1/batches", self._list, methods=["GET"]),
                Route("/v1/batches/{id}", self._get, methods=["GET"]),
                Route("/v1/batches/{id}/cancel", self._cancel, methods=["POST"])]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    # -- endpoints -----------------------------------------------------------------------------------------------
    async def _upload(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if (refused := self.llm.check_key(request)) is not None:
            return refused
        async with request.form(max_part_size=512 * 1024 * 1024) as form:
            upload = form.get("file")
            if form.get("purpose") != "batch" or upload is None or isinstance(upload, str):
                return self.llm.error(400, "purpose must be 'batch', with a file", None)
            data = await upload.read()
        with self.llm.lock:
            self.uploads += 1
            file_id = self._new_id("file")
            self.files[file_id] = data
        return JSONResponse({"id": file_id, "object": "file", "bytes": len(data), "purpose": "batch",
                             "filename": upload.filename})

    async def _content(self, request: Any) -> Any:
        from starlette.responses import Response

        if (refused := self.llm.check_key(request)) is not None:
            return refused
        data = self.files.get(request.path_params["id"])
        if data is None:
            return self.llm.error(404, "No such file.", None)
        return Response(data, media_type="application/jsonl")

    async def _create(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if (refused := self.llm.check_key(request)) is not None:
            return refused
        body = json.loads(await request.body())
        if body.get("input_file_id") not in self.files or body.get("endpoint") != "/v1/chat/completions":
            return self.llm.error(400, "input_file_id must be an uploaded file, endpoint /v1/chat/completions", None)
        with self.llm.lock:
            self.created += 1
            batch = FakeBatch(self._new_id("batch"), body["input_file_id"])
            self.batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        with self.llm.lock:
            lose, self.lose_creates = self.lose_creates > 0, max(0, self.lose_creates - 1)
        if lose:
            from .testing import _Dropped

            return _Dropped()
        return JSONResponse(batch.json())

    async def _get(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if (refused := self.llm.check_key(request)) is not None:
            return refused
        with self.llm.lock:
            failing, self.fail_polls = self.fail_polls > 0, max(0, self.fail_polls - 1)
        if failing:
            return self.llm.error(500, "The server had an error while processing your request.", None)
        batch = self.batches.get(request.path_params["id"])
        if batch is None:
            return self.llm.error(404, "No such batch.", None)
        return JSONResponse(batch.json())

    async def _list(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if (refused := self.llm.check_key(request)) is not None:
            return refused
        newest = sorted(self.batches.values(), key=lambda b: -int(b.id.split("-")[1]))
        return JSONResponse({"object": "list", "data": [b.json() for b in newest[:100]], "has_more": False})

    async def _cancel(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if (refused := self.llm.check_key(request)) is not None:
            return refused
        batch = self.batches.get(request.path_params["id"])
        if batch is None:
            return self.llm.error(404, "No such batch.", None)
        with self.llm.lock:
            self.cancels += 1
            if batch.status not in ENDED:
                batch.cancel, batch.status = True, "cancelling"
        return JSONResponse(batch.json())

    # -- processing ----------------------------------------------------------------------------------------------
    async def _run(self, batch: FakeBatch) -> None:
        lines = self.files[batch.input_file_id].splitlines()
        if self.refuse is not None:
            batch.errors = [{"code": "invalid_request", "message": self.refuse, "line": 1, "param": None}]
            batch.status = "failed"
            return
        batch.total = len(lines)
        if not batch.cancel:
            batch.status = "in_progress"
        out: list[bytes] = []
        err: list[bytes] = []
        for n, line in enumerate(lines):
            while n >= self.hold_after and not self.hold.is_set() and not batch.cancel:
                await asyncio.sleep(0.005)
            request = json.loads(line)
            custom_id = request["custom_id"]
            if batch.cancel or (self.expire_after is not None and n >= self.expire_after):
                code = "batch_cancelled" if batch.cancel else "batch_expired"
                err.append(_line(custom_id, None, {"code": code, "message": f"this request did not run ({code})"}))
                continue
            if self.line_delay:
                await asyncio.sleep(self.line_delay)
            status, body = self.llm.batch_line(request["body"])
            if status == 200:
                batch.done += 1
                out.append(_line(custom_id, {"status_code": 200, "request_id": f"req-{n}", "body": body}, None))
            else:
                batch.failed += 1
                err.append(_line(custom_id, {"status_code": status, "request_id": f"req-{n}", "body": body}, None))
        out.extend(self.garbage)
        with self.llm.lock:
            if out:
                batch.output_file_id = self._new_id("file")
                self.files[batch.output_file_id] = b"".join(x if x.endswith(b"\n") else x + b"\n" for x in out)
            if err:
                batch.error_file_id = self._new_id("file")
                self.files[batch.error_file_id] = b"".join(err)
            expired = self.expire_after is not None and batch.total > self.expire_after
            batch.status = "cancelled" if batch.cancel else "expired" if expired else "completed"


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
    return json.dumps({"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": response,
                       "error": error}).encode() + b"\n"
