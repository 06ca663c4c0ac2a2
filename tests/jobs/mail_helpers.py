"""TLS contexts for the email tests' SMTP server (a throwaway CA from tests/tls_redis.py) and a job runner."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import jobkit
import jobkit.jobs
from tests.tls_redis import Certs, make_certs

__all__ = ["run_email", "server_tls"]


def server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Certs]:
    """A server context with a certificate for 127.0.0.1, and the certificates (for the client's context)."""
    certs = make_certs(tmp_path / "certs", name="jobkit mail test CA")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.cert, certs.key)
    return ctx, certs


async def run_email(backend: jobkit.Backend, payload: dict[str, Any], timeout: float = 30.0) -> jobkit.Job:
    """Submit a send_email job on `backend` (run by an embedded worker) and wait for its end."""
    handle = await jobkit.submit(jobkit.jobs.send_email, payload, backend=backend)
    return await handle.wait(timeout=timeout)
