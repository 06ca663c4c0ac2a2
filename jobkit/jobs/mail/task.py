"""`jobkit.jobs.send_email`: the built-in task that sends one templated message to each recipient."""

from __future__ import annotations

from ... import Context, task
from .._policy import ATTEMPTS, BACKOFF
from .models import EmailReport, SendEmail
from .sender import Send

__all__ = ["send_email"]


@task(name="jobkit.jobs.send_email", queue="default", attempts=ATTEMPTS, backoff=BACKOFF)
async def send_email(ctx: Context, payload: SendEmail) -> EmailReport:
    """Render and send `payload`'s message to each recipient through a registered SMTP server, recipient by
    recipient, resuming after the last one accepted (see docs/email.md)."""
    return await Send(ctx, payload).run()
