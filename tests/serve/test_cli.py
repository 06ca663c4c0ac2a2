"""`jobkit tokens add` and `jobkit serve` as real processes; `jobkit status --json` gives /health's verdict."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import jobkit
from tests.serve.conftest import httpx


async def _jobkit(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "jobkit", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_process_with_a_backend_stored_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    token = (await _jobkit("tokens", "add", "--owner", "alice", "--url", url)).strip()
    admin = (await _jobkit("tokens", "add", "--admin", "--url", url)).strip()
    assert token.startswith("jk_") and token != admin
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobkit", "serve", "--url", url, "--task", "demo.x", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None

        async def started() -> None:
            while b"Uvicorn running" not in await proc.stderr.readline():  # type: ignore[union-attr]
                assert proc.returncode is None
        await asyncio.wait_for(started(), 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            r = await client.post("/queues/demo/jobs", json={"task": "demo.x", "payload": {"n": 1}},
                                  headers={"Authorization": f"Bearer {admin}"})
            assert r.status_code == 202, r.text
            assert (await client.get("/queues", headers={"Authorization": f"Bearer {admin}"})).status_code == 200
            assert (await client.get("/queues")).status_code == 401
            health = await client.get("/health", headers={"Authorization": f"Bearer {admin}"})
            assert health.json()["status"] == "degraded"  # a job waits and no worker runs
            schema = (await client.get("/openapi.json")).json()
            assert schema["openapi"].startswith("3.") and "/jobs/{job_id}/events" in schema["paths"]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    status = json.loads(await _jobkit("status", "--json", "--url", url))
    assert status["health"]["status"] == "degraded" == (await jobkit.health(url)).status


def test_tokens_in_a_query_string_are_masked_in_the_access_log() -> None:
    import logging

    from jobkit.serve._cli import HideTokens

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/jobs/a/events?queue=q&token=jk_secret&x=1", "1.1", 200), None)
    assert HideTokens().filter(record)
    assert "jk_secret" not in record.getMessage() and "token=***&x=1" in record.getMessage()


def test_a_bad_config_file_says_which_field(tmp_path: Path) -> None:
    import pytest

    from jobkit.serve import ServeConfig

    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"tasks": ["report"], "wait_max": -1}))
    with pytest.raises(jobkit.ConfigError, match=r"serve config .*wait_max"):
        ServeConfig.load(path)
    path.write_text(json.dumps({"tokens": [{"sha256": "0" * 64}]}))
    with pytest.raises(jobkit.ConfigError, match="an owner .* or admin"):
        ServeConfig.load(path)
    path.write_text(json.dumps({"tasks": ["report"], "upload_root": str(tmp_path)}))
    assert ServeConfig.load(path).tasks == {"report"}
