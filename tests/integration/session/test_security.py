"""Service token, ids that never reach Redis, guessing, and failing closed."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable

import httpx
from redis.asyncio import Redis

from devtools.polling import eventually
from devtools.redis_server import RedisServer
from tests.integration.session.conftest import AUTH, TOKEN, SettingsFactory, serve


async def test_every_call_but_health_needs_the_token(client: httpx.AsyncClient) -> None:
    user = str(uuid.uuid4())
    calls = [
        ("POST", "/v1/sessions", {"user_id": user}),
        ("GET", "/v1/sessions/" + "a" * 43, None),
        ("DELETE", f"/v1/users/{user}/sessions", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
    ]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):  # fmt: skip
        for method, path, body in calls:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"]["code"] == "UNAUTHORIZED"
            assert response.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/health", headers={"Authorization": ""})).status_code == 200
    assert (await client.post("/v1/sessions", json={"user_id": user})).status_code == 201


async def test_the_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    user = str(uuid.uuid4())
    for scheme in ("bearer", "BEARER", "BeArEr"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        created = await client.post("/v1/sessions", json={"user_id": user}, headers=headers)
        assert created.status_code == 201, scheme
    basic = await client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401


async def test_ids_never_reach_redis_or_lists(
    client: httpx.AsyncClient, redis: Redis, key_prefix: str
) -> None:
    user = str(uuid.uuid4())
    ids = [
        (await client.post("/v1/sessions", json={"user_id": user, "data": {"n": n}})).json()["id"]
        for n in range(3)
    ]
    await client.post(f"/v1/sessions/{ids[0]}/refresh")
    ids.append((await client.post(f"/v1/sessions/{ids[1]}/rotate")).json()["id"])
    await client.delete(f"/v1/sessions/{ids[2]}")
    listing = (await client.get(f"/v1/users/{user}/sessions")).text
    assert len((await client.get(f"/v1/users/{user}/sessions")).json()["items"]) == 2

    dumped = b""
    async for key in redis.scan_iter(match=f"{key_prefix}:*"):
        dumped += key + await redis.dump(key) + await _contents(redis, key)
    assert dumped.count(f"{key_prefix}:session:".encode()) >= 3  # the dump did see sessions
    for sid in ids:
        assert sid.encode() not in dumped
        assert sid not in listing


def _raw(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def _contents(redis: Redis, key: bytes) -> bytes:
    """A key's value as plain bytes, whatever its type."""
    kind = _raw(await redis.type(key))
    if kind == b"string":
        return _raw(await redis.get(key))
    if kind == b"zset":
        return b"".join(_raw(m) for m in await redis.zrange(key, 0, -1))
    if kind == b"stream":
        entries = await redis.xrange(key) or []
        return b"".join(_raw(k) + _raw(v) for _, f in entries for k, v in (f or {}).items())
    raise AssertionError(f"unexpected {kind!r} at {key!r}")


async def test_ten_thousand_guessed_ids_are_all_404(client: httpx.AsyncClient) -> None:
    user = uuid.uuid4()
    await client.post("/v1/sessions", json={"user_id": str(user)})  # a live one exists
    # Well formed, so each is looked up: half of them name the live session's own owner.
    owners = [user.hex, uuid.uuid4().hex]
    guesses = [owners[n % 2] + secrets.token_urlsafe(32) for n in range(10_000)]
    gate = asyncio.Semaphore(100)

    async def status(sid: str) -> int:
        async with gate:
            return (await client.get(f"/v1/sessions/{sid}")).status_code

    statuses = await asyncio.wait_for(asyncio.gather(*(status(g) for g in guesses)), 90)
    assert set(statuses) == {404}
    assert len(statuses) == 10_000


async def test_no_redis_means_503_then_recovery(
    session_settings: SettingsFactory, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    settings = session_settings(
        redis_url=server.url, redis_max_retries=0, redis_read_timeout="500ms",
        redis_write_timeout="500ms",
    )  # fmt: skip
    user = str(uuid.uuid4())
    async with serve(settings) as client:
        sid = (await client.post("/v1/sessions", json={"user_id": user})).json()["id"]
        server.kill()
        for response in (
            await client.get(f"/v1/sessions/{sid}"),
            await client.post("/v1/sessions", json={"user_id": user}),
            await client.post(f"/v1/sessions/{sid}/refresh"),
            await client.get(f"/v1/users/{user}/sessions"),
        ):
            assert response.status_code == 503  # never 404 (or worse, 200): fail closed
            assert response.json()["error"]["code"] == "SESSION_STORE_UNAVAILABLE"
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["components"]["redis"]["status"] == "down"
        server.start()  # same port, empty data: the old session is gone, the service is back
        assert (await client.get(f"/v1/sessions/{sid}")).status_code == 404
        assert (await client.post("/v1/sessions", json={"user_id": user})).status_code == 201


async def test_metrics_count_and_sample(session_settings: SettingsFactory) -> None:
    async with serve(session_settings(housekeeping_interval="50ms")) as client:
        user = str(uuid.uuid4())
        sid = (await client.post("/v1/sessions", json={"user_id": user})).json()["id"]
        await client.post("/v1/sessions", json={"user_id": user})
        await client.post(f"/v1/sessions/{sid}/refresh")
        await client.delete(f"/v1/sessions/{sid}")
        await client.delete(f"/v1/users/{user}/sessions")

        async def sampled() -> str | None:
            text = (await client.get("/metrics")).text
            return text if "sessions_active 0.0" in text else None

        text = await eventually(sampled, "sessions_active sampled as 0", within=5, every=0.05)
        for line in (
            "sessions_created_total 2.0",
            "sessions_refreshed_total 1.0",
            'sessions_destroyed_total{reason="logout"} 1.0',
            'sessions_revoked_total{trigger="requested"} 1.0',
        ):
            assert line in text, line


async def test_active_gauge_counts_live_sessions(session_settings: SettingsFactory) -> None:
    async with serve(session_settings(housekeeping_interval="50ms")) as client:
        for _ in range(3):
            await client.post("/v1/sessions", json={"user_id": str(uuid.uuid4())})

        async def ours_counted() -> bool:
            text = (await client.get("/metrics")).text
            return next(
                float(line.split()[1]) >= 3 for line in text.splitlines()
                if line.startswith("sessions_active ")
            )  # fmt: skip

        # Other tests share this Redis under other prefixes: at least our three are seen.
        await eventually(ours_counted, "sessions_active at 3 or more", within=5, every=0.05)


async def test_openapi_documents_the_contract(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json", headers=AUTH)).json()
    paths = doc["paths"]
    expected = {
        "/v1/sessions": {"post": "201"},
        "/v1/sessions/{session_id}": {"get": "200", "delete": "204"},
        "/v1/sessions/{session_id}/refresh": {"post": "200"},
        "/v1/sessions/{session_id}/rotate": {"post": "201"},
        "/v1/users/{user_id}/sessions": {"get": "200", "delete": "200"},
        "/health": {"get": "200"},
    }
    for path, methods in expected.items():
        for method, success in methods.items():
            responses = paths[path][method]["responses"]
            assert success in responses, (path, method)
            if path != "/health":
                assert "401" in responses, (path, method)
                assert "503" in responses, (path, method)
    assert "404" in paths["/v1/sessions/{session_id}"]["get"]["responses"]
    assert doc["components"]["securitySchemes"]["serviceToken"]["scheme"] == "bearer"
    assert paths["/health"]["get"]["security"] == []
