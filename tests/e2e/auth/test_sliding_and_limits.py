"""The auth dependency keeps an active session alive and applies the `user` rate policy."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.e2e.auth.conftest import StackFactory

# Exact counts of sliding-window admissions: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("clear_of_a_minute_edge")


async def sign_up_and_in(http: httpx.AsyncClient) -> dict[str, str]:
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Ann", "password": "password-1"}
    assert (await http.post("/v1/auth/register", json=body)).status_code == 201
    credentials = {"email": body["email"], "password": body["password"]}
    response = await http.post("/v1/auth/login", json=credentials)
    assert response.status_code == 200
    http.cookies.clear()
    return {"Cookie": f"session={response.cookies['session']}"}


async def test_activity_slides_the_idle_expiry(make_stack: StackFactory) -> None:
    stack = make_stack(SESSION_IDLE_TTL="1500ms", SESSION_ABSOLUTE_TTL="1h")
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=10) as http:
        active, idle = await sign_up_and_in(http), await sign_up_and_in(http)
        ends = time.monotonic() + 3.5  # more than twice the idle timeout
        while time.monotonic() < ends:  # not polling: activity for 3.5 s
            # Used every 200 ms: the api refreshes it once half the idle window is gone.
            assert (await http.get("/v1/users/me", headers=active)).status_code == 200
            await asyncio.sleep(0.2)
        assert (await http.get("/v1/users/me", headers=idle)).status_code == 401  # left alone


async def test_user_policy_limits_a_signed_in_user(make_stack: StackFactory) -> None:
    stack = make_stack(RATE_LIMIT_USER="3/minute")
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=10) as http:
        first, second = await sign_up_and_in(http), await sign_up_and_in(http)
        answers = [(await http.get("/v1/users/me", headers=first)).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        assert (await http.get("/v1/users/me", headers=second)).status_code == 200  # per user
