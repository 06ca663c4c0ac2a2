"""The email job's payload (`SendEmail`), its result (`EmailReport`) and its checkpoint."""

from __future__ import annotations

from email.headerregistry import Address
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["MAX_RECIPIENTS", "Attachment", "EmailReport", "EmailState", "Recipient", "RecipientOutcome", "SendEmail",
           "check_address"]

MAX_RECIPIENTS = 10_000


def check_address(value: str) -> str:
    """`value` if it is one plain mailbox (`user@example.com`); ValueError otherwise (header injection included)."""
    if any(c in value for c in "\r\n\0") or value.count("@") != 1:
        raise ValueError(f"{value[:80]!r} is not an email address like user@example.com")
    try:
        parsed = Address(addr_spec=value)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{value[:80]!r} is not an email address like user@example.com ({exc})") from None
    if not parsed.username or ("." not in parsed.domain and parsed.domain != "localhost"):
        raise ValueError(f"{value[:80]!r} is not an email address like user@example.com")
    return value


class Recipient(BaseModel):
    """One addressee: the address, an optional display name and the template variables for them alone."""

    model_config = ConfigDict(extra="forbid")

    to: str
    name: str | None = Field(default=None, max_length=200)
    context: dict[str, Any] = Field(default_factory=dict, description="variables for this recipient's message,"
                                    " over the payload's shared context")

    _to = field_validator("to")(classmethod(lambda cls, v: check_address(v)))

    @field_validator("name")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        if v is not None and any(c in v for c in "\r\n\0"):
            raise ValueError("a display name is one line of text")
        return v


class Attachment(BaseModel):
    """A file inside the worker's file roots, attached to every message."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="inside the worker's file roots")
    filename: str | None = Field(default=None, max_length=200, description="the name the recipient sees")
    content_type: str | None = Field(default=None, pattern=r"^[\w.+-]+/[\w.+-]+$", description="default: guessed")


class SendEmail(BaseModel):
    """Send one templated message to each recipient through a registered SMTP server."""

    model_config = ConfigDict(extra="forbid")

    recipients: list[Recipient] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    server: str = Field(default="default", description="an SMTP server registered with register_smtp_server")
    sender: str | None = Field(default=None, description="the From address; default: the server's")
    reply_to: str | None = None
    template: str | None = Field(default=None, description="a template set in the worker's registered template"
                                 " folder: NAME.subject.txt with NAME.txt and/or NAME.html")
    subject: str | None = Field(default=None, max_length=2000, description="inline Jinja2 template of the subject")
    text: str | None = Field(default=None, description="inline Jinja2 template of the plain-text body")
    html: str | None = Field(default=None, description="inline Jinja2 template of the HTML body (autoescaped)")
    context: dict[str, Any] = Field(default_factory=dict, description="variables shared by every message")
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    retries: int = Field(default=3, ge=0, le=10, description="further tries of a recipient the server deferred (4xx)")
    retry_delay: float = Field(default=2.0, ge=0, le=600, allow_inf_nan=False,
                               description="seconds before the first retry of a deferred recipient, doubled after")
    per_minute: int | None = Field(default=None, ge=1, description="send slower than the server's shared limit")

    _addresses = field_validator("sender", "reply_to")(
        classmethod(lambda cls, v: None if v is None else check_address(v)))

    @model_validator(mode="after")
    def _one_source(self) -> SendEmail:
        inline = self.subject is not None or self.text is not None or self.html is not None
        if self.template is not None and inline:
            raise ValueError("give template='name' or inline subject/text/html, not both")
        if self.template is None and (self.subject is None or (self.text is None and self.html is None)):
            raise ValueError("give template='name', or an inline subject with text and/or html")
        return self


Status = Literal["sent", "failed", "skipped"]


class RecipientOutcome(BaseModel):
    """What happened to one recipient: sent (accepted by the server), failed (with the server's code), skipped."""

    to: str
    status: Status
    message_id: str | None = None
    code: int | None = None
    error: str | None = None


class EmailReport(BaseModel):
    """What the job did, recipient by recipient, across all attempts."""

    server: str
    total: int
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    recipients: list[RecipientOutcome] = Field(default_factory=list)
    duration_s: float = 0.0
    attempts: int = 1


class EmailState(BaseModel):
    """The checkpoint, saved after each recipient: one letter per recipient ('.' to do, 's' sent, 'f' failed,
    'k' skipped) and the failures' codes and reasons by recipient index."""

    outcomes: str
    errors: dict[str, tuple[int | None, str]] = Field(default_factory=dict)
    elapsed_s: float = 0.0
