"""Two api processes share Redis: a write on one drops the other's near-cache entry."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from devtools.polling import eventually
from tests.e2e.session.processes import TOKEN, SessionProcess, start_session

from .conftest import ApiProcess

__all__ = ["start_session"]

# How long a purge may take to reach another process: publish + one pub/sub hop on loopback,
# with room for a loaded 2-core machine. The near-cache TTL (30 s) is far beyond it, so only
# the purge can explain a fresh answer inside this bound.
LAG_BOUND = 2.0


async def test_a_write_on_one_process_drops_the_near_cache_entry_in_another(
    api_env: dict[str, str],
    start_api: Callable[..., ApiProcess],
    start_session: Callable[..., SessionProcess],
) -> None:
    env = {**api_env, "NEAR_CACHE_TTL": "30s", "RATE_LIMIT_ENABLED": "false"}
    env["SERVICE_TOKEN"] = TOKEN
    # The write is the signed-in user's own: the writer checks its session with this service.
    env["SESSION_SERVICE_URL"] = start_session(env).url
    writer, reader = start_api(env), start_api(env)
    async with httpx.AsyncClient(timeout=5.0) as client:
        body = {"email": f"{time.time_ns()}@example.com", "name": "Old", "password": "password1"}
        created = await client.post(f"{writer.url}/v1/users", json=body)
        assert created.status_code == 201
        credentials = {"email": body["email"], "password": body["password"]}
        login = await client.post(f"{writer.url}/v1/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        signed_in = {"Cookie": f"session={login.cookies['session']}"}
        client.cookies.clear()  # only the PATCH carries the session
        path = f"/v1/users/{created.json()['id']}"
        for _ in range(3):
            assert (await client.get(f"{reader.url}{path}")).json()["name"] == "Old"
        assert await reader.metric_async("near_cache_lookups_total", result="hit") >= 1

        patched = await client.patch(f"{writer.url}{path}", json={"name": "New"}, headers=signed_in)
        assert patched.status_code == 200

        async def fresh() -> bool:
            return bool((await client.get(f"{reader.url}{path}")).json()["name"] == "New")

        await eventually(fresh, "the reader answers the new name", within=LAG_BOUND, every=0.005)
