"""`MailCatcher`: a real SMTP server on loopback (aiosmtpd) that keeps what it accepts, for tests, notebooks and
benchmarks: `pip install aiosmtpd` (it comes with jobkit's `dev` extra).

It speaks STARTTLS or TLS from the start when given a certificate, requires AUTH when given users, and answers
a recipient's messages with the replies a test queued for that address ("451 ...", "550 ..."), else 250.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

__all__ = ["Delivered", "MailCatcher"]


@dataclass(frozen=True)
class Delivered:
    """A message the server accepted: its envelope and its parsed content."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    user: str | None  # who logged in to send it


@dataclass
class _Handler:
    catcher: MailCatcher
    replies: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        c = self.catcher
        for to in envelope.rcpt_tos:
            if to in c.hold:
                c.hold.discard(to)
                c.holding.set()
                await asyncio.get_running_loop().run_in_executor(None, c.release.wait, 60.0)
            queued = self.replies.get(to)
            if queued:
                return queued.pop(0)
        content = envelope.content.replace(b"\r\n", b"\n")  # as a mailbox would store it: Python line ends
        msg = email.message_from_bytes(content, policy=email.policy.default)
        user = session.auth_data if isinstance(session.auth_data, str) else None
        with c.changed:
            c.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), msg, user))
            c.changed.notify_all()
        return "250 Message accepted for delivery"


class MailCatcher:
    """An SMTP server on 127.0.0.1 in a thread of its own; a context manager (`with MailCatcher() as smtp:`).

    `tls`: a server SSLContext; with `implicit_tls` the connection is TLS from the start, else STARTTLS is offered
    and required. `users`: login -> password; when given, AUTH is required (after TLS when there is TLS)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 users: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.delivered: list[Delivered] = []
        self.changed = threading.Condition()
        self.hold: set[str] = set()  # recipients whose next message waits until `release` is set
        self.holding = threading.Event()  # set when such a message arrived
        self.release = threading.Event()
        self.handler = _Handler(self)
        self.users = users
        self.tls, self.implicit_tls = tls, implicit_tls
        self._controller: Any = None

    def reply(self, to: str, *replies: str) -> None:
        """The server answers the next messages to `to` with `replies` ("451 4.7.1 try later"), one each."""
        self.handler.replies[to].extend(replies)

    def __enter__(self) -> MailCatcher:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and self.users is not None and \
                self.users.get(data.login.decode()) == data.password.decode()
            return AuthResult(success=ok, handled=False, auth_data=data.login.decode() if ok else None)

        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": 10.0}
        if self.tls is not None and self.implicit_tls:
            kwargs["ssl_context"] = self.tls
        elif self.tls is not None:
            kwargs.update(tls_context=self.tls, require_starttls=True)
        if self.users is not None:
            kwargs.update(authenticator=check, auth_required=True, auth_require_tls=self.tls is not None)
        else:
            kwargs.update(auth_require_tls=False)
        implicit = self.tls is not None and self.implicit_tls

        class _Controller(Controller):
            def factory(self) -> Any:
                smtp = super().factory()  # type: ignore[no-untyped-call]
                if implicit:  # aiosmtpd knows TLS from STARTTLS only: this connection is TLS from its first byte
                    smtp._auth_require_tls = False
                return smtp

        self._controller = _Controller(self.handler, **kwargs)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivered]:
        """Block (bounded) until at least `count` messages were accepted; returns them all."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.delivered) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.delivered)} of {count} messages arrived in {timeout}s")
                self.changed.wait(left)
            return list(self.delivered)

    def to(self, addresses: Iterable[str]) -> dict[str, int]:
        """How many accepted messages each of `addresses` received."""
        counts = dict.fromkeys(addresses, 0)
        for d in self.delivered:
            for r in d.recipients:
                counts[r] = counts.get(r, 0) + 1
        return counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
