"""`rediss+cluster://`: a 3-master Redis Cluster that speaks only TLS (clients and cluster bus), with certificates
made at test time. Jobs on queues spread over every master run through a worker; the certificate is verified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

import jobkit
from jobkit.backends import from_url
from tests.tls_redis import make_certs

from .servers import RedisCluster

pytestmark = pytest.mark.cluster


@jobkit.task(name="tls.where")
async def where(ctx: jobkit.Context, n: int) -> dict[str, object]:
    return {"n": n, "queue": ctx.job.queue}


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    workdir = tmp_path_factory.mktemp("tls-cluster")
    cluster = RedisCluster(workdir, certs=make_certs(workdir / "certs"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def one_queue_per_master(cluster: RedisCluster) -> list[str]:
    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < len(cluster.ports):
        name = f"tls-{i}"
        chosen.setdefault(cluster.slot_owner(key_slot(f"jobkit:{{{name}}}:meta".encode())), name)
        i += 1
    return list(chosen.values())


@pytest.mark.timeout(120)
async def test_jobs_run_on_every_master_over_tls(tls_cluster: RedisCluster) -> None:
    assert tls_cluster.url.startswith("rediss+cluster://")
    backend = from_url(tls_cluster.url)
    await backend.open()
    try:
        queues = one_queue_per_master(tls_cluster)
        handles = []
        for i, queue in enumerate(queues):
            job = await jobkit.Queue(queue, backend=backend).add("tls.where", i)
            handles.append(jobkit.JobHandle(job, backend))
        async with jobkit.Worker([where], queues=queues, backend=backend, handle_signals=False):
            done = [await h.wait(timeout=30) for h in handles]
        assert [j.result for j in done] == [{"n": i, "queue": q} for i, q in enumerate(queues)]
    finally:
        await backend.close()


async def test_the_cluster_certificate_is_verified(tls_cluster: RedisCluster, tmp_path: Path) -> None:
    stranger = make_certs(tmp_path / "other", name="some other CA")
    seeds = ",".join(f"127.0.0.1:{p}" for p in tls_cluster.ports)
    with pytest.raises(jobkit.ConfigError, match="certificate verify failed"):
        await from_url(f"rediss+cluster://{seeds}?ssl_ca_certs={stranger.ca}&socket_connect_timeout=5").open()
    with pytest.raises(jobkit.ConfigError, match="does not answer"):  # plain text to TLS ports
        await from_url(f"redis+cluster://{seeds}?socket_connect_timeout=5&socket_timeout=5").open()
