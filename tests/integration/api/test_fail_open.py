"""Redis failing under a running api: reads answer from the database, health says degraded,
the breaker spares each request the Redis timeout, and the cache comes back by itself."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx

from devtools.polling import eventually
from devtools.redis_server import RedisServer
from tests.conftest import RedisTopology

from .conftest import Api, ApiFactory, public


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _hits_again(api: Api, path: str) -> bool:
    response = await api.client.get(path)
    return response.status_code == 200 and response.headers["x-cache"] == "HIT"


async def test_redis_killed_mid_test_reads_from_database_then_recovers(
    make_api: ApiFactory,
    redis_server_factory: Callable[..., RedisServer],
    redis_topology: RedisTopology,
) -> None:
    server = redis_server_factory()
    # The sessions live on another Redis: the PATCH needs a live session (no answer is a 503,
    # fail closed); what is killed here is the api's own Redis (cache, stream).
    async with (
        make_api(redis_url=server.url, near_cache_size=0, breaker_reset_timeout="300ms") as api,
        api.sessions(**redis_topology.settings()),
    ):
        user = await api.create_user()
        headers = await api.sign_in(user)
        path = f"/v1/users/{user['id']}"
        assert (await api.client.get(path)).headers["x-cache"] == "MISS"
        assert (await api.client.get(path)).headers["x-cache"] == "HIT"

        server.kill()
        reads = [await api.client.get(path) for _ in range(20)]
        assert {r.status_code for r in reads} == {200}
        assert all(r.json() == public(user) for r in reads)
        assert {r.headers["x-cache"] for r in reads} == {"MISS"}
        patched = await api.client.patch(path, json={"name": "Offline"}, headers=headers)
        assert patched.status_code == 200

        health = await api.client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["components"]["redis"]["status"] == "down"
        assert health.json()["components"]["database"]["status"] == "ok"
        metrics = (await api.client.get("/metrics")).text
        assert metric(metrics, 'degraded_decisions_total{operation="user_read"}') >= 20

        server.start()
        await eventually(lambda: _hits_again(api, path), "reads hit the cache again")
        assert (await api.client.get(path)).json()["name"] == "Offline"
        assert (await api.client.get("/health")).json()["status"] == "ok"


async def test_breaker_spares_reads_the_timeout_of_a_hung_redis(
    make_api: ApiFactory, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    timeout = 0.3
    async with make_api(
        redis_url=server.url,
        near_cache_size=0,
        redis_read_timeout=timeout,
        redis_max_retries=0,
        breaker_failure_threshold=3,
        breaker_reset_timeout="60s",
    ) as api:
        user = await api.create_user()
        path = f"/v1/users/{user['id']}"
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # a hung server: every command waits the timeout
        try:
            durations = [await _timed_get(api.client, path) for _ in range(30)]
        finally:
            os.kill(server.pid, signal.SIGCONT)

    slow = [d for d in durations if d >= timeout * 0.8]
    # Only the reads that tripped the breaker paid the timeout; the rest went straight to SQL.
    assert len(slow) <= 3
    after_open = sorted(durations[3:])
    assert after_open[int(len(after_open) * 0.99) - 1] < timeout * 0.5


async def _timed_get(client: httpx.AsyncClient, path: str) -> float:
    started = time.perf_counter()
    response = await client.get(path)
    assert response.status_code == 200
    return time.perf_counter() - started
