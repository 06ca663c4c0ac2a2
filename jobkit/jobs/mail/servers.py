"""SMTP servers a payload may name, registered by the worker's code: host, port, TLS and credentials stay here.

A payload says `server="default"`; it never carries an address or a password. The password comes from the
registration, or from an environment variable named there (`password_env`), read when a job connects.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Literal

from ... import ConfigError
from .._registry import not_registered
from .errors import EmailSetupError

__all__ = ["DEFAULT_RATE", "SmtpServer", "get_server", "register_smtp_server"]

DEFAULT_RATE = 100  # messages per minute, shared by every worker on the backend
Security = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class SmtpServer:
    """How to reach one SMTP server, and how fast every worker together may send through it."""

    name: str
    host: str
    port: int
    security: Security
    username: str | None
    password: str | None
    password_env: str | None
    sender: str | None  # the From address when the payload gives none
    per_minute: int
    timeout: float
    tls_context: ssl.SSLContext | None

    def secret(self) -> str | None:
        """The password to log in with: the registered one, else the environment variable's value at this moment."""
        if self.password is not None or self.password_env is None:
            return self.password
        value = os.environ.get(self.password_env)
        if value is None:
            raise EmailSetupError(f"SMTP server {self.name!r} takes its password from ${self.password_env}, which is"
                                  " not set in the worker's environment: set it, then retry the job")
        return value


_servers: dict[str, SmtpServer] = {}


def register_smtp_server(
    name: str, *, host: str, port: int | None = None, security: Security = "starttls", username: str | None = None,
    password: str | None = None, password_env: str | None = None, sender: str | None = None,
    per_minute: int = DEFAULT_RATE, timeout: float = 30.0, tls_context: ssl.SSLContext | None = None,
) -> SmtpServer:
    """Let payloads send through this server as `server=name`.

    `security`: "starttls" (upgrade a plain connection, port 587 by default), "tls" (TLS from the start, 465) or
    "none" (25; loopback relays only). `per_minute` caps messages per minute across every worker on the backend.
    `tls_context` checks the server's certificate (default: the system's CAs)."""
    if not name or not isinstance(name, str):
        raise ConfigError("an SMTP server name is a plain word like 'default'")
    if security not in ("starttls", "tls", "none"):
        raise ConfigError(f"security is 'starttls', 'tls' or 'none', not {security!r}")
    if password is not None and password_env is not None:
        raise ConfigError("give password= or password_env= (the environment variable holding it), not both")
    if per_minute < 1:
        raise ConfigError(f"per_minute is a positive number of messages, not {per_minute}")
    if port is None:
        port = {"starttls": 587, "tls": 465, "none": 25}[security]
    server = SmtpServer(name, host, port, security, username, password, password_env, sender, per_minute, timeout,
                        tls_context)
    _servers[name] = server
    return server


def get_server(name: str) -> SmtpServer:
    found = _servers.get(name)
    if found is None:
        raise not_registered("SMTP server", name, _servers, "jobkit.jobs.register_smtp_server(name, host=...)",
                             EmailSetupError)
    return found
