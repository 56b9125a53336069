"""Rate-limit headers and the 429 body through the real api (`api.main.create_app`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.main import create_app
from devtools.settings import StackSettings

# Exact counts of sliding-window admissions: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("clear_of_a_minute_edge")


@asynccontextmanager
async def api_client(settings: StackSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("198.51.100.20", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def test_api_sends_headers_and_a_429_in_the_error_shape(
    make_settings: Callable[..., StackSettings], migrated_database: str
) -> None:
    settings = make_settings(
        database_url=migrated_database, near_cache_size=0, rate_limit_default="3/minute"
    )
    async with api_client(settings) as client:
        pages = [await client.get("/v1/users", params={"page": 1, "limit": 5}) for _ in range(4)]
        health = await client.get("/health")
        metrics = await client.get("/metrics")
    assert [r.status_code for r in pages] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in pages] == ["2", "1", "0", "0"]
    for response in pages:
        assert response.headers["x-ratelimit-limit"] == "3"
        assert response.headers["x-ratelimit-reset"].isdigit()
        assert response.headers["ratelimit-policy"] == '"default";q=3;w=60'
        assert response.headers["ratelimit"].startswith('"default";r=')
        assert "x-request-id" in response.headers  # the request-id middleware wraps ours
    limited = pages[3]
    assert int(limited.headers["retry-after"]) >= 1
    body: dict[str, Any] = limited.json()
    assert body["error"]["code"] == "RATE_LIMITED"
    assert set(body["error"]) == {"code", "message", "details"}
    assert health.status_code in (200, 503)  # probes are never rate limited
    assert "x-ratelimit-limit" not in health.headers
    assert 'ratelimit_decisions_total{decision="limited",policy="default"} 1.0' in metrics.text


async def test_api_auth_routes_use_the_auth_policy(
    make_settings: Callable[..., StackSettings], migrated_database: str
) -> None:
    settings = make_settings(
        database_url=migrated_database, near_cache_size=0, rate_limit_auth="2/minute"
    )
    body = {"email": "nobody@example.com", "password": "wrong-password"}
    async with api_client(settings) as client:
        attempts = [await client.post("/v1/auth/login", json=body) for _ in range(3)]
    assert [r.status_code == 429 for r in attempts] == [False, False, True]
    assert '"auth";q=2;w=60' in attempts[0].headers["ratelimit-policy"]
    assert attempts[2].json()["error"]["code"] == "RATE_LIMITED"


async def test_rate_limiting_can_be_turned_off(
    make_settings: Callable[..., StackSettings], migrated_database: str
) -> None:
    settings = make_settings(
        database_url=migrated_database,
        near_cache_size=0,
        rate_limit_enabled=False,
        rate_limit_default="1/minute",
    )
    async with api_client(settings) as client:
        pages = [await client.get("/v1/users") for _ in range(3)]
    assert [r.status_code for r in pages] == [200, 200, 200]
    assert "x-ratelimit-limit" not in pages[0].headers


async def test_creating_users_shares_the_auth_policy_with_register(
    make_settings: Callable[..., StackSettings], migrated_database: str
) -> None:
    # POST /v1/users costs what register costs (an argon2 hash, a 409 that tells whether an
    # email is taken): it draws on the same `auth` bucket, so neither route multiplies it.
    # GCRA, exact at any moment: the sliding window's estimate, floor(previous × the part of
    # the window left), lets one more through just after a window boundary.
    settings = make_settings(
        database_url=migrated_database,
        rate_limit_auth="5/minute",
        rate_limit_default="100/minute",
        rate_limit_algorithm="gcra",
    )

    def body(i: int) -> dict[str, str]:
        return {"email": f"{uuid.uuid4().hex}-{i}@example.com", "name": "N", "password": "p" * 10}

    async with api_client(settings) as client:
        created = [await client.post("/v1/users", json=body(i)) for i in range(3)]
        registered = [await client.post("/v1/auth/register", json=body(i)) for i in range(3)]
        more = await client.post("/v1/users", json=body(9))
    assert [r.status_code for r in created + registered] == [201] * 5 + [429]
    assert more.status_code == 429
    assert more.json()["error"]["details"]["policy"] == "auth"
    assert '"auth";q=5;w=60' in more.headers["ratelimit-policy"]
