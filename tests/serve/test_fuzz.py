"""schemathesis fuzzes the API from its own OpenAPI schema on a real uvicorn: no 500, every status and body as
declared. SSE streams are finite here: no fuzzed id names a job (the allow-list takes no fuzzed task)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis import checks

from jobkit.serve import ServeConfig, app
from jobkit.serve._openapi import schema as openapi_schema
from tests.serve.conftest import ENTRIES, auth

schema = schemathesis.openapi.from_dict(openapi_schema())
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API over a SQLite file on a uvicorn in its own thread (schemathesis calls it synchronously)."""
    root = tmp_path_factory.mktemp("fuzz")
    application = app(ServeConfig(url=f"sqlite:///{root / 'jobs.db'}", tasks={"fuzz.never-guessed"}, tokens=ENTRIES,
                                  upload_root=root / "uploads", upload_max_bytes=10_000, wait_max=1.0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive()
        assert Path(root / "jobs.db").exists()


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_keeps_to_its_schema(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, headers=auth("admin"), checks=CHECKS, timeout=10)
