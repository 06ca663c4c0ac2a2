"""Load check of `jobkit serve`: 10,000 job status reads (GET /jobs/{id}) from 50 concurrent clients, on loopback.

    .venv/bin/python benchmarks/serve_load.py                       # SQLite and Redis (a private redis-server)
    .venv/bin/python benchmarks/serve_load.py --backends redis --redis-url redis://127.0.0.1:6379/14

For each backend: a fresh SQLite file or Redis database holding 1,000 jobs (some waiting, some completed), then
two servers in turn, each a uvicorn subprocess on a free loopback port:

- `jobkit serve`: the real API (token check, owner-scoped lookup of the id in every queue, the job as JSON);
- `bare`: the endpoint users write by hand today, a Starlette route calling `Queue(name).get(id)` with no auth,
  on the same uvicorn and backend — the floor the API's own work adds to.

The client (this process: 50 keep-alive connections spoken on asyncio streams, far lighter than an HTTP library)
reads random ids of those jobs, 500 warm-up reads first, then 10,000 timed ones; latency is request sent -> body
read. Prints a Markdown table (p50/p95/p99, reads per second, the API-to-bare ratio) and writes
results/serve-load-<UTC stamp>.md. The machine has 2 cores: server and client share them (and the load average
before the run is recorded, since other work skews every figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jobkit
from jobkit.models import JobState, Outcome
from jobkit.serve import hash_token

HERE = Path(__file__).resolve().parent
QUEUE = "bench"
TOKEN = "bench-admin-token"
CLIENTS, READS, WARMUP, JOBS = 50, 10_000, 500, 1_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _fill(url: str) -> list[str]:
    backend = await jobkit.connect(url)
    try:
        jobs = await jobkit.Queue(QUEUE, backend=backend).add_bulk("bench.report", [{"n": i} for i in range(JOBS)])
        claimed = await backend.claim(QUEUE, "w", limit=JOBS // 2, lease=60, now=time.time())
        await backend.finish(QUEUE, "w", [Outcome(job_id=j.id, state=JobState.COMPLETED, result={"rows": 3})
                                          for j in claimed.jobs], time.time())
        return [j.id for j in jobs]
    finally:
        await backend.close()


def bare_app(url: str) -> object:
    """What a user writes by hand: one route, `Backend.get`, the job as JSON."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def get(request: Request) -> Response:
        job = await jobkit.Queue(QUEUE, backend=url).get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(job.model_dump(mode="json"))

    return Starlette(routes=[Route("/jobs/{job_id}", get)])


def _server(kind: str, url: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    if kind == "jobkit serve":
        tokens = tmp / "tokens.json"
        tokens.write_text(json.dumps({"tokens": [{"sha256": hash_token(TOKEN), "admin": True}]}))
        cmd = [sys.executable, "-m", "jobkit", "serve", "--url", url, "--tokens", str(tokens), "--port", str(port),
               "--log-level", "WARNING"]
    else:
        cmd = [sys.executable, str(Path(__file__)), "--bare-server", url, "--port", str(port)]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE)


class _Connection:
    """One keep-alive HTTP/1.1 connection, spoken on asyncio streams: a load client far lighter than an HTTP
    library, so the figures are the server's and not the client's CPU (the two share the machine's cores)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)


async def _connect(port: int, proc: subprocess.Popen[bytes]) -> _Connection:
    for _ in range(300):  # the server process starts up: try until it accepts (bounded, 30 s)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            return _Connection(*await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not answer in 30 s")


async def _load(port: int, ids: list[str], n: int, proc: subprocess.Popen[bytes]) -> tuple[list[float], float]:
    connections = [await _connect(port, proc) for _ in range(CLIENTS)]
    latencies: list[float] = []
    left = [n]
    rng = random.Random(42)

    async def one_client(conn: _Connection) -> None:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            status, body = await conn.get(f"/jobs/{rng.choice(ids)}")
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"{status}: {body.decode()}")

    try:
        wall = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in connections))
        return latencies, time.perf_counter() - wall
    finally:
        for c in connections:
            c.writer.close()


async def measure(kind: str, url: str, ids: list[str], tmp: Path) -> dict[str, float]:
    port = _free_port()
    proc = _server(kind, url, port, tmp)
    try:
        await _load(port, ids, WARMUP, proc)
        latencies, wall = await _load(port, ids, READS, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    return {"p50": _pct(latencies, 50), "p95": _pct(latencies, 95), "p99": _pct(latencies, 99),
            "rps": READS / wall}


def _redis_url(args: argparse.Namespace, tmp: str) -> tuple[str, object | None]:
    if args.redis_url:
        return args.redis_url, None
    sys.path.insert(0, str(HERE.parent / "tests"))
    from private_redis import RedisServer

    server = RedisServer(Path(tmp)).__enter__()
    return server.url(), server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--redis-url", help="a Redis database to empty and use (default: a private redis-server)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = ["| backend | server | p50 ms | p95 ms | p99 ms | reads/s | p95 vs bare |",
            "|---|---|---:|---:|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        try:
            for backend in args.backends.split(","):
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / 'serve.db'}"
                else:
                    url, server = _redis_url(args, tmp)
                    import redis

                    redis.Redis.from_url(url).flushdb()
                ids = await _fill(url)
                found = {kind: await measure(kind, url, ids, Path(tmp)) for kind in ("bare", "jobkit serve")}
                for kind, r in found.items():
                    ratio = r["p95"] / found["bare"]["p95"]
                    row = (f"| {backend} | {kind} | {r['p50'] * 1000:.1f} | {r['p95'] * 1000:.1f} |"
                           f" {r['p99'] * 1000:.1f} | {r['rps']:.0f} | {ratio:.2f}x |")
                    rows.append(row)
                    print(row, flush=True)
        finally:
            if server is not None:
                server.stop()  # type: ignore[attr-defined]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = HERE / "results" / f"serve-load-{stamp}.md"
    out.write_text(f"# jobkit serve: {READS:,} status reads, {CLIENTS} concurrent clients"
                   f" (load average {load:.1f} before)\n\n"
                   + "\n".join(rows) + "\n")
    print(f"\nwritten to {out.relative_to(HERE.parent)}")


def bare_server(url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(url), host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--bare-server":
        bare_server(sys.argv[2], int(sys.argv[4]))
    else:
        asyncio.run(main())
