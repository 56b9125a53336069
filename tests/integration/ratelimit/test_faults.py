"""Redis dies or hangs under the middleware: fail open or closed per policy, no timeout paid
per request once the breaker is open, and recovery by itself when Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from devtools.redis_server import RedisServer
from devtools.settings import StackSettings
from shared.connections import make_redis

from .conftest import client_for, make_app

READ_TIMEOUT = 0.5


@pytest.fixture
async def server_and_client(
    redis_server_factory: Callable[..., RedisServer], make_settings: Callable[..., StackSettings]
) -> AsyncIterator[tuple[RedisServer, StackSettings, Redis]]:
    server = redis_server_factory()
    settings = make_settings(
        redis_url=server.url,
        rate_limit_default="100/minute",
        rate_limit_auth="100/minute",
        rate_limit_fail_closed="auth",
        redis_read_timeout=f"{READ_TIMEOUT}s",
        redis_write_timeout=f"{READ_TIMEOUT}s",
        redis_max_retries=0,
        breaker_failure_threshold=3,
        breaker_reset_timeout="0.5s",
    )
    client = make_redis(server.url, settings)  # the production factory: pool, timeouts
    yield server, settings, client
    await client.aclose()


async def _timed(call: Callable[[], Awaitable[httpx.Response]]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await call()
    return response, time.perf_counter() - started


async def _trip_breaker(client: httpx.AsyncClient) -> None:
    # The first failures reach Redis (and may pay the timeout); three open the breaker.
    for _ in range(3):
        assert (await client.get("/v1/ping")).status_code == 200


async def _await_recovery(client: httpx.AsyncClient) -> httpx.Response:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = await client.get("/v1/ping")
        if "x-ratelimit-limit" in response.headers:
            return response
        await asyncio.sleep(0.05)
    pytest.fail("the limiter did not recover within 10 s")


def _degraded(registry: CollectorRegistry, policy: str) -> float:
    labels = {"policy": policy, "decision": "degraded"}
    return registry.get_sample_value("ratelimit_decisions_total", labels) or 0.0


async def test_killed_redis_fails_open_or_closed_per_policy_then_recovers(
    server_and_client: tuple[RedisServer, StackSettings, Redis],
) -> None:
    server, settings, redis = server_and_client
    registry = CollectorRegistry()
    app = make_app(settings, lambda: redis, registry)
    async with client_for(app) as client:
        assert "x-ratelimit-limit" in (await client.get("/v1/ping")).headers
        server.kill()  # SIGKILL by PID
        await _trip_breaker(client)
        opened = [await _timed(lambda: client.get("/v1/ping")) for _ in range(20)]
        closed = [await _timed(lambda: client.post("/v1/auth/login")) for _ in range(5)]
        server.start()  # same port, empty data
        recovered = await _await_recovery(client)
        login_after = await client.post("/v1/auth/login")
    for response, elapsed in opened:
        assert response.status_code == 200  # `default` fails open
        assert "x-ratelimit-limit" not in response.headers
        assert elapsed < READ_TIMEOUT / 5
    for response, elapsed in closed:
        assert response.status_code == 503  # `auth` fails closed
        assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert int(response.headers["retry-after"]) >= 1
        assert elapsed < READ_TIMEOUT / 5
    assert _degraded(registry, "default") >= 23
    assert _degraded(registry, "auth") >= 5
    assert recovered.status_code == 200
    assert login_after.status_code == 200
    assert login_after.headers["x-ratelimit-limit"] == "100"


async def test_hung_redis_costs_no_timeout_once_the_breaker_is_open(
    server_and_client: tuple[RedisServer, StackSettings, Redis],
) -> None:
    server, settings, redis = server_and_client
    app = make_app(settings, lambda: redis, CollectorRegistry())
    assert server.pid is not None
    async with client_for(app) as client:
        assert (await client.get("/v1/ping")).status_code == 200
        os.kill(server.pid, signal.SIGSTOP)  # alive but silent: every call would time out
        try:
            tripping = [await _timed(lambda: client.get("/v1/ping")) for _ in range(3)]
            opened = [await _timed(lambda: client.get("/v1/ping")) for _ in range(20)]
        finally:
            os.kill(server.pid, signal.SIGCONT)
        recovered = await _await_recovery(client)
    # Before the breaker opened each request paid the socket timeout...
    assert all(elapsed >= READ_TIMEOUT * 0.8 for _, elapsed in tripping)
    # ...after, none does.
    assert all(r.status_code == 200 for r, _ in opened)
    # (Half the timeout as the bound: a full GC pass of a big test process can take ~0.1 s.)
    assert max(elapsed for _, elapsed in opened) < READ_TIMEOUT / 2
    assert statistics.median(elapsed for _, elapsed in opened) < READ_TIMEOUT / 10
    assert recovered.headers["x-ratelimit-remaining"].isdigit()
