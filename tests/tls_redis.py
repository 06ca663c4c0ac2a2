"""TLS for test redis-servers: a throwaway CA and a certificate for 127.0.0.1, made with the openssl CLI at test
time, and a private redis-server that speaks only TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.private_redis import RedisServer

__all__ = ["Certs", "TLSRedisServer", "make_certs"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(workdir: Path, name: str = "jobkit test CA") -> Certs:
    """A CA and a server certificate for IP 127.0.0.1 signed by it (EC P-256, valid one day)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed: it makes the test certificates")
    workdir.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", f"/CN={name}",
             cwd=workdir)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=workdir)
    (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.cnf", cwd=workdir)
    return Certs(workdir / "ca.crt", workdir / "server.crt", workdir / "server.key")


class TLSRedisServer(RedisServer):
    """A redis-server with TLS only (`--port 0 --tls-port PORT`), its certificate signed by `certs.ca`."""

    def __init__(self, workdir: Path, certs: Certs, *, args: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, args=(
            "--tls-port", "0", "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no", *args))
        self.certs = certs
        at = self._argv.index("--tls-port")
        self._argv[at + 1] = str(self.port)
        self._argv[self._argv.index("--port") + 1] = "0"

    def wait_ready(self, timeout: float = 15.0) -> None:
        """As RedisServer's, but skips the test when this redis-server was built without TLS."""
        try:
            super().wait_ready(timeout)
        except RuntimeError:
            if any(sign in self.log_tail() for sign in ("Bad directive", "not supported", "TLS support")):
                pytest.skip(f"this redis-server was built without TLS: {self.log_tail()[-200:]}")
            raise

    def url(self, db: int = 0) -> str:
        return f"rediss://127.0.0.1:{self.port}/{db}?ssl_ca_certs={self.certs.ca}"

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as raw, \
                    self.certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False
