"""Redis dies or hangs under the middleware: the in-process fallback (or 503 for fail-closed
policies), no timeout paid per request once the breaker is open, and recovery by itself when
Redis is back."""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from redis.asyncio import Redis

from devtools.polling import eventually
from devtools.redis_server import RedisServer
from devtools.settings import StackSettings
from shared.connections import make_redis
from shared.settings import RateSpec

from .conftest import Limited, limited_app

# Exact counts of sliding-window admissions: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("clear_of_a_minute_edge")

READ_TIMEOUT = 0.5


@pytest.fixture
async def server_and_client(
    redis_server_factory: Callable[..., RedisServer], make_settings: Callable[..., StackSettings]
) -> AsyncIterator[tuple[RedisServer, StackSettings, Redis]]:
    server = redis_server_factory()
    settings = make_settings(
        redis_url=server.url,
        rate_limit_default="10/minute",
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


async def _await_recovery(app: Limited) -> httpx.Response:
    """The first response decided by Redis again (the guard left its fallback)."""

    async def decided_by_redis() -> httpx.Response | None:
        response = await app.client.get("/v1/ping")
        assert app.state.guard is not None
        return None if app.state.guard.in_fallback else response

    return await eventually(decided_by_redis, "the limiter recovers", every=0.05)


def _fallback_active(app: Limited) -> float | None:
    return app.state.metrics.registry.get_sample_value("ratelimit_fallback_active")


async def test_killed_redis_falls_back_in_process_or_refuses_per_policy_then_recovers(
    server_and_client: tuple[RedisServer, StackSettings, Redis],
) -> None:
    server, settings, _ = server_and_client
    async with limited_app(settings) as app:
        client = app.client
        assert (await client.get("/v1/ping")).headers["x-ratelimit-limit"] == "10"
        server.kill()  # SIGKILL by PID
        # Each login passes `default` (in-process) and then meets `auth`, which fails closed.
        closed = [await _timed(lambda: client.post("/v1/auth/login")) for _ in range(5)]
        down = [await _timed(lambda: client.get("/v1/ping")) for _ in range(25)]
        assert _fallback_active(app) == 1
        fallback_allowed = app.decisions("default", "fallback_allowed")
        fallback_limited = app.decisions("default", "fallback_limited")
        unavailable = app.decisions("auth", "unavailable")
        server.start()  # same port, empty data
        recovered = await _await_recovery(app)
        login_after = await client.post("/v1/auth/login")
        assert _fallback_active(app) == 0
    for response, _ in closed:
        assert response.status_code == 503  # `auth` fails closed
        assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert int(response.headers["retry-after"]) >= 1
    # The breaker spares all but the first calls (the ones that open it) a timeout.
    assert sorted(elapsed for _, elapsed in closed + down)[-4] < READ_TIMEOUT / 5
    assert unavailable == 5
    # `default` is decided in-process: its policy still holds (10 a minute, counted from the
    # outage's start: 5 logins, then 5 pings), with its headers.
    statuses = [response.status_code for response, _ in down]
    assert statuses == [200] * 5 + [429] * 20
    assert all(r.headers["x-ratelimit-limit"] == "10" for r, _ in down)
    assert (fallback_allowed, fallback_limited) == (10, 20)
    assert recovered.status_code == 200
    assert login_after.status_code == 200
    assert login_after.headers["ratelimit-policy"] == '"default";q=10;w=60, "auth";q=100;w=60'


async def test_hung_redis_costs_no_timeout_once_the_breaker_is_open(
    server_and_client: tuple[RedisServer, StackSettings, Redis],
) -> None:
    server, settings, _ = server_and_client
    assert server.pid is not None
    async with limited_app(
        settings.model_copy(update={"rate_limit_default": RateSpec(limit=100, period=60)})
    ) as app:
        client = app.client
        assert (await client.get("/v1/ping")).status_code == 200
        os.kill(server.pid, signal.SIGSTOP)  # alive but silent: every call would time out
        try:
            tripping = [await _timed(lambda: client.get("/v1/ping")) for _ in range(3)]
            opened = [await _timed(lambda: client.get("/v1/ping")) for _ in range(20)]
        finally:
            os.kill(server.pid, signal.SIGCONT)
        recovered = await _await_recovery(app)
    # Before the breaker opened each request paid the socket timeout...
    assert all(elapsed >= READ_TIMEOUT * 0.8 for _, elapsed in tripping)
    # ...after, none does.
    assert all(r.status_code == 200 for r, _ in opened)
    # (Half the timeout as the bound: a full GC pass of a big test process can take ~0.1 s.)
    assert max(elapsed for _, elapsed in opened) < READ_TIMEOUT / 2
    assert statistics.median(elapsed for _, elapsed in opened) < READ_TIMEOUT / 10
    assert recovered.headers["x-ratelimit-remaining"].isdigit()
