"""The rate-limit middleware over a real Redis: headers, 429 body, policies, client identity.

Through a minimal app (conftest.limited_app) so each case controls its settings and its peer
address; test_api.py repeats the headers-and-429 case through the real api.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from devtools.settings import StackSettings
from shared.keys import Keys

from .conftest import limited_app

# Exact counts of sliding-window admissions: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("clear_of_a_minute_edge")


async def test_headers_then_429_in_the_error_shape(
    make_settings: Callable[..., StackSettings], redis: Redis
) -> None:
    async with limited_app(make_settings(rate_limit_default="3/minute")) as app:
        client = app.client
        responses = [await client.get("/v1/ping") for _ in range(4)]
    now = time.time()
    for left, response in zip((2, 1, 0), responses, strict=False):
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "3"
        assert response.headers["x-ratelimit-remaining"] == str(left)
        assert now - 1 <= int(response.headers["x-ratelimit-reset"]) <= now + 61
        # The window's end exactly (windows are whole minutes on the server's clock), not a
        # second past it.
        assert int(response.headers["x-ratelimit-reset"]) % 60 == 0
        assert response.headers["ratelimit-policy"] == '"default";q=3;w=60'
        state = response.headers["ratelimit"]
        assert state.startswith(f'"default";r={left};t=')
        assert 0 <= int(state.rsplit("t=", 1)[1]) <= 60
        assert "retry-after" not in response.headers
    limited = responses[3]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["ratelimit-policy"] == '"default";q=3;w=60'
    body = limited.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["error"]["details"]["policy"] == "default"
    assert "default" in body["error"]["message"]


async def test_health_is_not_limited(
    make_settings: Callable[..., StackSettings], redis: Redis
) -> None:
    async with limited_app(make_settings(rate_limit_default="1/minute")) as app:
        client = app.client
        assert (await client.get("/v1/ping")).status_code == 200
        assert (await client.get("/v1/ping")).status_code == 429
        health = await client.get("/health")
    assert health.status_code == 200
    assert "x-ratelimit-limit" not in health.headers


async def test_auth_routes_have_their_own_stricter_policy(
    make_settings: Callable[..., StackSettings], redis: Redis
) -> None:
    settings = make_settings(rate_limit_default="100/minute", rate_limit_auth="2/minute")
    async with limited_app(settings) as app:
        client = app.client
        first = await client.post("/v1/auth/login")
        second = await client.post("/v1/auth/register")  # the same bucket as login
        third = await client.post("/v1/auth/login")
        other = await client.get("/v1/ping")
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert first.headers["ratelimit-policy"] == '"default";q=100;w=60, "auth";q=2;w=60'
    assert first.headers["x-ratelimit-limit"] == "2"  # the tightest policy speaks
    assert third.json()["error"]["details"]["policy"] == "auth"
    assert other.status_code == 200
    assert other.headers["x-ratelimit-limit"] == "100"


async def test_user_policy_through_the_auth_dependency(
    make_settings: Callable[..., StackSettings], redis: Redis
) -> None:
    settings = make_settings(rate_limit_default="100/minute", rate_limit_user="2/minute")
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    async with limited_app(settings) as app:
        client = app.client
        seen = [await client.get("/v1/users/me", headers={"x-test-user": alice}) for _ in range(3)]
        anonymous = await client.get("/v1/users/me")
        other = await client.get("/v1/users/me", headers={"x-test-user": bob})
    assert [r.status_code for r in seen] == [200, 200, 429]
    assert '"user";q=2;w=60' in seen[0].headers["ratelimit-policy"]
    assert seen[2].json()["error"]["code"] == "RATE_LIMITED"
    assert seen[2].json()["error"]["details"]["policy"] == "user"
    assert 1 <= int(seen[2].headers["retry-after"]) <= 60
    assert anonymous.status_code == 200
    assert "user" not in anonymous.headers["ratelimit-policy"]
    assert other.status_code == 200


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_settings: Callable[..., StackSettings], redis: Redis, key_prefix: str
) -> None:
    settings = make_settings(rate_limit_default="2/minute")
    async with limited_app(settings, peer="203.0.113.9") as app:
        client = app.client
        statuses = [
            (
                await client.get("/v1/ping", headers={"x-forwarded-for": f"198.51.100.{i}"})
            ).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 429, 429]
    keys = Keys(key_prefix)
    assert await redis.exists(keys.ratelimit("default", "203.0.113.9")) == 1
    assert await redis.exists(keys.ratelimit("default", "198.51.100.0")) == 0


async def test_forwarded_for_from_a_trusted_proxy_sets_the_identity(
    make_settings: Callable[..., StackSettings], redis: Redis, key_prefix: str
) -> None:
    settings = make_settings(rate_limit_default="2/minute", trusted_proxies="10.0.0.0/8")

    async def status(client: httpx.AsyncClient, forwarded: str) -> int:
        response = await client.get("/v1/ping", headers={"x-forwarded-for": forwarded})
        return response.status_code

    async with limited_app(settings, peer="10.0.0.2") as app:
        proxy = app.client
        first_client = [await status(proxy, "198.51.100.7") for _ in range(3)]
        second_client = await status(proxy, "198.51.100.8")
        # The client sent its own X-Forwarded-For; the proxy appended the real address.
        spoof_through_proxy = await status(proxy, "9.9.9.9, 198.51.100.7")
        # Two trusted hops (10.0.0.3 forwarded to 10.0.0.2): skipped from the right.
        behind_two_proxies = await status(proxy, "198.51.100.7, 10.0.0.3")
    assert first_client == [200, 200, 429]
    assert second_client == 200
    assert spoof_through_proxy == 429
    assert behind_two_proxies == 429
    keys = Keys(key_prefix)
    assert await redis.exists(keys.ratelimit("default", "198.51.100.7")) == 1
    assert await redis.exists(keys.ratelimit("default", "10.0.0.2")) == 0
    assert await redis.exists(keys.ratelimit("default", "9.9.9.9")) == 0


@pytest.mark.parametrize("peer", ["2001:db8:1:2::10", "2001:db8:1:2:ffff::1"])
async def test_ipv6_clients_share_their_64(
    make_settings: Callable[..., StackSettings], redis: Redis, key_prefix: str, peer: str
) -> None:
    async with limited_app(make_settings(rate_limit_default="5/minute"), peer=peer) as app:
        client = app.client
        response = await client.get("/v1/ping")
    assert response.status_code == 200
    key = Keys(key_prefix).ratelimit("default", "2001:db8:1:2::")
    assert await redis.exists(key) == 1


async def test_decisions_are_counted_per_policy(
    make_settings: Callable[..., StackSettings], redis: Redis
) -> None:
    async with limited_app(make_settings(rate_limit_default="1/minute")) as app:
        for _ in range(3):
            await app.client.get("/v1/ping")
        assert app.decisions("default", "allowed") == 1
        assert app.decisions("default", "limited") == 2
