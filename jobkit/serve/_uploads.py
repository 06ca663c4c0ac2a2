"""Uploaded files: received with a size limit, kept under the configured upload root, handed to the job by path,
and removed once the job is gone (retention or clean took it).

Layout: <upload_root>/<job id>/<file name>, with the job's queue in <job id>/.queue; the job id is made here, never
taken from the client, and the file name is reduced to safe characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from ..backends import Backend
from ..models import new_job_id
from ._state import state

__all__ = ["Upload", "receive", "sweep"]

QUEUE_FILE = ".queue"
GRACE = 300.0  # seconds a fresh upload folder is left alone: its job may not be added yet
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
log = logging.getLogger("jobkit.serve")


@dataclass
class Upload:
    """A stored upload and the form fields that came with it."""

    job_id: str
    path: Path
    size: int
    task: str
    payload: dict[str, Any]

    def discard(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def safe_name(name: str | None) -> str:
    cleaned = _UNSAFE.sub("_", Path(name or "").name).lstrip("._")[:120]
    return cleaned or "upload"


def _limited(request: Request, limit: int) -> Request:
    """The request with a body that refuses (413) past `limit` bytes, so nothing larger is ever spooled."""
    seen = 0
    upstream = request.receive

    async def receive() -> Message:
        nonlocal seen
        message = await upstream()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise HTTPException(413, f"the upload is larger than this server's limit of {limit} bytes")
        return message

    return Request(request.scope, receive)


def _payload(raw: str | UploadFile | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError as exc:
        raise HTTPException(422, f"the form field `payload` is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(422, "the form field `payload` is a JSON object (the file's path is added to it)")
    return value


async def receive(request: Request, queue: str) -> Upload:
    """Store the form's `file` under the upload root; the payload (form field `payload`) gets its path."""
    config = state(request).config
    if config.upload_root is None:
        raise HTTPException(400, "this server takes no uploads (no upload root configured): send a JSON body")
    limit = config.upload_max_bytes + 64 * 1024  # room for the form's other parts
    if int(request.headers.get("content-length") or 0) > limit:
        raise HTTPException(413, f"the upload is larger than this server's limit of {config.upload_max_bytes} bytes")
    async with _limited(request, limit).form(max_files=1, max_fields=8) as form:
        file, task = form.get("file"), form.get("task")
        if not isinstance(file, UploadFile):
            raise HTTPException(422, "a multipart submission needs a `file` part")
        if not isinstance(task, str) or not task:
            raise HTTPException(422, "a multipart submission needs a `task` field")
        payload = _payload(form.get("payload"))
        job_id = new_job_id()
        folder = config.upload_root / job_id
        path = folder / safe_name(file.filename)
        await asyncio.to_thread(_store, file, folder, path, queue)
    size = path.stat().st_size
    if size > config.upload_max_bytes:
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(413, f"the upload is larger than this server's limit of {config.upload_max_bytes} bytes")
    payload[config.upload_field] = str(path)
    return Upload(job_id=job_id, path=path, size=size, task=task, payload=payload)


def _store(file: UploadFile, folder: Path, path: Path, queue: str) -> None:
    folder.mkdir(parents=True)
    (folder / QUEUE_FILE).write_text(queue)
    with open(path, "xb") as out:
        shutil.copyfileobj(file.file, out, 1024 * 1024)


async def sweep(backend: Backend, root: Path) -> int:
    """Remove the uploads whose job no longer exists (retention or clean removed it); returns how many."""
    if not root.is_dir():
        return 0
    removed = 0
    for folder in [f for f in root.iterdir() if f.is_dir()]:
        try:
            if time.time() - folder.stat().st_mtime < GRACE:
                continue
            queue = (folder / QUEUE_FILE).read_text()
        except OSError:
            continue  # not ours, or still being written
        if await backend.get(queue, folder.name) is None:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


async def sweep_forever(backend: Backend, root: Path, every: float) -> None:
    """`sweep` every `every` seconds, for the life of the app."""
    while True:
        try:
            await sweep(backend, root)
        except Exception:  # the next round tries again; say why this one failed
            log.exception("jobkit serve: removing uploads of removed jobs failed")
        await asyncio.sleep(every)
