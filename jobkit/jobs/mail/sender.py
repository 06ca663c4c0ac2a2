"""One attempt of an email job: render, then send recipient by recipient over one SMTP connection, at the shared
rate, saving the outcome of each recipient before the next one goes out.

A retried job resumes from that checkpoint: a recipient the server accepted is not sent again. Replies are
sorted by their code: 2xx sent, 4xx tried again after a delay (up to `retries` times), 5xx failed for good;
both end up in the report, recipient by recipient. A connection lost mid-batch is opened again; one that cannot
be opened fails the attempt, and the job's retry goes on from the checkpoint.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from ... import Context
from .._quota import SharedRate
from .compose import compose, load_attachments, message_id
from .errors import EmailSetupError
from .models import EmailReport, EmailState, Recipient, RecipientOutcome, SendEmail
from .servers import SmtpServer, get_server
from .templates import Templates

__all__ = ["LIMITS_QUEUE", "Send"]

LIMITS_QUEUE = "jobkit-email"  # where the shared rate counters live: every worker on the backend shares them
RECONNECTS = 3  # connections lost in one attempt before it gives up (the job's retry goes on later)
PROGRESS_EVERY = 0.5  # seconds between progress reports: a fast batch would otherwise write one per message
_STATUS = {"s": "sent", "f": "failed", "k": "skipped"}


def _smtp() -> Any:
    try:
        import aiosmtplib
    except ImportError:
        raise EmailSetupError("the email job needs aiosmtplib in the worker: pip install 'jobkit[email]'") from None
    return aiosmtplib


class Send:
    """Runs one attempt; `run()` returns the report, or raises."""

    def __init__(self, ctx: Context, payload: SendEmail) -> None:
        self.ctx, self.p = ctx, payload
        self.server: SmtpServer = get_server(payload.server)
        sender = payload.sender or self.server.sender
        if sender is None:
            raise EmailSetupError(f"no sender: give sender='...' in the payload, or sender= when registering SMTP"
                                  f" server {self.server.name!r}")
        self.sender = sender
        self.templates = Templates(payload)
        self.files = load_attachments(payload.attachments)
        n = len(payload.recipients)
        saved = EmailState.model_validate(ctx.checkpoint) if ctx.checkpoint else None
        self.state = saved if saved is not None and len(saved.outcomes) == n else self._fresh()
        self.rates = [SharedRate(ctx.backend, LIMITS_QUEUE, f"smtp:{self.server.name}", self.server.per_minute)]
        if payload.per_minute is not None and payload.per_minute < self.server.per_minute:
            self.rates.append(SharedRate(ctx.backend, LIMITS_QUEUE, f"job:{ctx.job_id}", payload.per_minute))
        self.smtp: Any = None
        self.reconnects = 0
        self.started = time.monotonic()
        self.reported = 0.0
        self.base_elapsed = self.state.elapsed_s
        self.sent_here = 0

    def _fresh(self) -> EmailState:
        """Every recipient to do, except repeats of an address, which are skipped."""
        outcomes: list[str] = []
        errors: dict[str, tuple[int | None, str]] = {}
        seen: dict[str, int] = {}
        for i, r in enumerate(self.p.recipients):
            first = seen.setdefault(r.to.lower(), i)
            outcomes.append("." if first == i else "k")
            if first != i:
                errors[str(i)] = (None, f"the same address as recipient {first}")
        return EmailState(outcomes="".join(outcomes), errors=errors)

    async def run(self) -> EmailReport:
        try:
            for i, mark in enumerate(self.state.outcomes):
                if mark != ".":
                    continue
                if self.ctx.cancelled:
                    break
                await self._one(i, self.p.recipients[i])
        finally:
            await self._disconnect()
        await self._progress()
        return self._report()

    async def _one(self, i: int, r: Recipient) -> None:
        context = {"recipient": {"to": r.to, "name": r.name}, **self.p.context, **r.context}
        try:
            rendered = self.templates.render(context)
        except EmailSetupError as exc:
            await self._record(i, "f", None, str(exc))
            return
        msg = compose(r, rendered, self.sender, self.p.reply_to, message_id(self.ctx.job_id, r.to, self.sender),
                      self.files)
        for attempt in range(self.p.retries + 1):
            code, reason = await self._send(msg, r.to)
            if code is None:
                await self._record(i, "s", None, None)
                return
            if 400 <= code < 500 and attempt < self.p.retries:
                await asyncio.sleep(self.p.retry_delay * 2**attempt)
                continue
            await self._record(i, "f", code, reason)
            return

    async def _send(self, msg: Any, to: str) -> tuple[int | None, str]:
        """(None, "") when the server accepted the message, else its reply code and text."""
        aiosmtplib = _smtp()
        for rate in self.rates:
            await rate.acquire()
        while True:
            smtp = await self._connection()
            try:
                await smtp.send_message(msg, sender=self.sender, recipients=[to])
                return None, ""
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients[0]
                return refused.code, refused.message
            except aiosmtplib.SMTPResponseException as exc:
                if not smtp.is_connected:
                    self.smtp = None
                return exc.code, exc.message
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                await self._disconnect()
                self.reconnects += 1
                if self.reconnects > RECONNECTS:
                    raise ConnectionError(f"lost SMTP server {self.server.name!r} {self.reconnects} times in this"
                                          f" attempt ({type(exc).__name__}: {exc}); the retry goes on from the"
                                          " last recipient sent") from exc

    async def _connection(self) -> Any:
        if self.smtp is not None and self.smtp.is_connected:
            return self.smtp
        aiosmtplib = _smtp()
        s = self.server
        smtp = aiosmtplib.SMTP(hostname=s.host, port=s.port, use_tls=s.security == "tls",
                               start_tls=s.security == "starttls", tls_context=s.tls_context, timeout=s.timeout,
                               username=s.username, password=s.secret() if s.username else None)
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise EmailSetupError(f"SMTP server {s.name!r} refused the login of {s.username!r} ({exc.code}"
                                  f" {exc.message}): fix the credentials given to register_smtp_server") from None
        except (ssl.SSLCertVerificationError, aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError,
                aiosmtplib.SMTPServerDisconnected) as exc:
            bad = exc if isinstance(exc, ssl.SSLCertVerificationError) else exc.__cause__
            if isinstance(bad, ssl.SSLCertVerificationError):
                raise EmailSetupError(f"the certificate of SMTP server {s.name!r} at {s.host}:{s.port} is not"
                                      f" trusted ({bad.verify_message}): register it with tls_context= holding its"
                                      " CA") from None
            raise  # the server may be back soon: the job's retry goes on from the checkpoint
        except aiosmtplib.SMTPException as exc:  # no STARTTLS, no AUTH, ...: its registration does not fit it
            raise EmailSetupError(f"SMTP server {s.name!r} at {s.host}:{s.port} does not support what its"
                                  f" registration asks ({exc}): check security=, the port and username=") from None
        self.smtp = smtp
        return smtp

    async def _disconnect(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit()
        except Exception:  # noqa: BLE001 - saying goodbye is a courtesy: the outcomes are saved already
            smtp.close()

    async def _record(self, i: int, mark: str, code: int | None, reason: str | None) -> None:
        s = self.state.model_copy(deep=True)
        s.outcomes = s.outcomes[:i] + mark + s.outcomes[i + 1:]
        if mark == "f":
            s.errors[str(i)] = (code, (reason or "")[:500])
        else:
            self.sent_here += 1
        s.elapsed_s = self.base_elapsed + time.monotonic() - self.started
        self.state = s
        await self.ctx.save_checkpoint(s.model_dump(mode="json"))
        if time.monotonic() - self.reported >= PROGRESS_EVERY:
            await self._progress()

    async def _progress(self) -> None:
        self.reported = time.monotonic()
        o = self.state.outcomes
        total, sent, failed, skipped = len(o), o.count("s"), o.count("f"), o.count("k")
        done = total - o.count(".")
        minutes = (time.monotonic() - self.started) / 60
        rate = round(self.sent_here / minutes, 1) if minutes > 0 else 0.0
        await self.ctx.progress(100.0 * done / total, f"{sent:,} of {total:,} sent" + (
            f", {failed:,} failed" if failed else "") + (f", {skipped:,} skipped" if skipped else ""),
            sent=sent, failed=failed, skipped=skipped, total=total, rate_per_minute=rate)

    def _report(self) -> EmailReport:
        rows = []
        for i, (r, mark) in enumerate(zip(self.p.recipients, self.state.outcomes, strict=True)):
            code, error = self.state.errors.get(str(i), (None, None))
            if mark == ".":  # cancelled before its turn
                mark, error = "k", "the job was cancelled before this recipient's turn"
            rows.append(RecipientOutcome(to=r.to, status=_STATUS[mark], code=code, error=error,  # type: ignore[arg-type]
                                         message_id=message_id(self.ctx.job_id, r.to, self.sender) if mark == "s"
                                         else None))
        counts = {k: sum(1 for row in rows if row.status == k) for k in ("sent", "failed", "skipped")}
        return EmailReport(server=self.server.name, total=len(rows), recipients=rows, attempts=self.ctx.attempt,
                           duration_s=round(self.state.elapsed_s, 3), **counts)
