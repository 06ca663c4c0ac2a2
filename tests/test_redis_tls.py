"""`rediss://`: jobs run over TLS against a real redis-server, and the server's certificate is verified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
from jobkit.backends import from_url
from tests.tls_redis import Certs, TLSRedisServer, make_certs


@jobkit.task(queue="tls")
async def double(ctx: jobkit.Context, n: int) -> int:
    return 2 * n


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def tls_server(tmp_path: Path, certs: Certs) -> Iterator[TLSRedisServer]:
    (tmp_path / "redis").mkdir()
    with TLSRedisServer(tmp_path / "redis", certs) as server:
        yield server


async def test_jobs_run_over_tls(tls_server: TLSRedisServer) -> None:
    backend = from_url(tls_server.url())
    await backend.open()
    try:
        async with jobkit.Worker([double], backend=backend, handle_signals=False):
            assert await jobkit.run(double, 21, backend=backend, timeout=30) == 42
    finally:
        await backend.close()


async def test_a_server_certificate_from_another_ca_is_refused(tls_server: TLSRedisServer, tmp_path: Path) -> None:
    stranger = make_certs(tmp_path / "other", name="some other CA")
    backend = from_url(f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={stranger.ca}&socket_connect_timeout=5")
    with pytest.raises(jobkit.ConfigError, match="certificate verify failed"):
        await backend.open()


async def test_plain_redis_to_a_tls_port_is_a_clear_error(tls_server: TLSRedisServer) -> None:
    backend = from_url(f"redis://127.0.0.1:{tls_server.port}/0?socket_connect_timeout=5&socket_timeout=5")
    with pytest.raises(jobkit.ConfigError, match="does not answer"):
        await backend.open()
