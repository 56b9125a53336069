"""The api as launched (uvicorn --no-proxy-headers): a local client cannot spoof its identity.

uvicorn trusts `X-Forwarded-For` from 127.0.0.1 by default and would rewrite the peer address
before our middleware sees it; TRUSTED_PROXIES must be the only rule.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from .conftest import ApiProcess

# Exact counts of sliding-window admissions: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("clear_of_a_minute_edge")


async def test_spoofed_forwarded_for_from_an_untrusted_peer_shares_the_peers_budget(
    api_env: dict[str, str], start_api: Callable[..., ApiProcess]
) -> None:
    api = start_api({**api_env, "RATE_LIMIT_DEFAULT": "3/minute"})
    async with httpx.AsyncClient(base_url=api.url, timeout=5.0) as client:
        statuses = [
            (await client.get("/v1/users", headers={"X-Forwarded-For": f"203.0.113.{n}"}))
            for n in range(4)
        ]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[-1].json()["error"]["code"] == "RATE_LIMITED"


async def test_forwarded_for_from_a_trusted_proxy_is_the_client(
    api_env: dict[str, str], start_api: Callable[..., ApiProcess]
) -> None:
    api = start_api({**api_env, "RATE_LIMIT_DEFAULT": "3/minute", "TRUSTED_PROXIES": "127.0.0.1"})
    async with httpx.AsyncClient(base_url=api.url, timeout=5.0) as client:
        spread = [
            (await client.get("/v1/users", headers={"X-Forwarded-For": f"203.0.113.{n}"}))
            for n in range(5)
        ]
        one_client = [
            (await client.get("/v1/users", headers={"X-Forwarded-For": "198.51.100.7"}))
            for _ in range(4)
        ]
    assert all(r.status_code == 200 for r in spread)
    assert [r.status_code for r in one_client] == [200, 200, 200, 429]
