"""One recipient's message: headers, bodies, attachments, and a Message-ID that depends only on job and recipient,
so every attempt of a job gives a recipient the very same message."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from .._paths import inside_roots
from .._registry import shorten
from .errors import EmailSetupError
from .models import Attachment, Recipient
from .templates import Rendered

__all__ = ["MAX_ATTACHMENTS_BYTES", "File", "compose", "load_attachments", "message_id"]

MAX_ATTACHMENTS_BYTES = 25 * 1024 * 1024  # what common providers accept in one message


@dataclass(frozen=True)
class File:
    filename: str
    maintype: str
    subtype: str
    data: bytes


def message_id(job_id: str, to: str, sender: str) -> str:
    """`<digest@sender-domain>`: the same for the same job and recipient, on every attempt and every worker."""
    digest = hashlib.sha256(f"{job_id}\0{to.lower()}".encode()).hexdigest()[:40]
    return f"<{digest}@{sender.rpartition('@')[2]}>"


def load_attachments(items: list[Attachment]) -> list[File]:
    """The files, read once per attempt; each must lie inside the worker's file roots."""
    files, total = [], 0
    for item in items:
        path = inside_roots(item.path, "attachment", EmailSetupError)
        if not path.is_file():
            raise EmailSetupError(f"attachment {shorten(item.path)!r} is not a file inside the roots")
        data = path.read_bytes()
        total += len(data)
        if total > MAX_ATTACHMENTS_BYTES:
            raise EmailSetupError(f"the attachments pass {MAX_ATTACHMENTS_BYTES // 2**20} MB, more than mail servers"
                                  " accept in one message: link to large files instead")
        kind = item.content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        files.append(File(item.filename or path.name, maintype, subtype, data))
    return files


def compose(r: Recipient, rendered: Rendered, sender: str, reply_to: str | None, msg_id: str,
            files: list[File]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = formataddr((r.name, r.to)) if r.name else r.to
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = msg_id
    if rendered.text is not None:
        msg.set_content(rendered.text)
        if rendered.html is not None:
            msg.add_alternative(rendered.html, subtype="html")
    else:
        msg.set_content(rendered.html or "", subtype="html")
    for f in files:
        msg.add_attachment(f.data, maintype=f.maintype, subtype=f.subtype, filename=f.filename)
    return msg
