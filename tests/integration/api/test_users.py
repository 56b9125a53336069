"""Users over HTTP on real PostgreSQL and Redis: cache-aside, invalidation, events, errors."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from devtools.polling import eventually
from shared.cache import unversioned
from shared.events import parse_entry
from shared.keys import Keys

from .conftest import Api, ApiFactory, public


async def stream_events(redis: Redis, keys: Keys) -> list[Any]:
    """The user events on the stream; the session service's own events share it."""
    entries = await redis.xrange(keys.user_events()) or []
    events = [parse_entry(fields or {}) for _, fields in entries]
    return [e for e in events if e.type.startswith("user.")]


def detached(api: Api) -> dict[str, str]:
    """Settings for a session service that does not read this api's stream (another prefix).

    A session of a deleted user then stays live, as it does in production until the
    `user.deleted` event revokes it: the window in which the api itself must answer 404.
    """
    return {"key_prefix": f"{api.settings.key_prefix}-s"}


async def test_first_get_misses_then_hits(api: Api) -> None:
    user = await api.create_user()
    first = await api.client.get(f"/v1/users/{user['id']}")
    second = await api.client.get(f"/v1/users/{user['id']}")
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert (second.status_code, second.headers["x-cache"]) == (200, "HIT")
    assert first.json() == second.json() == public(user)
    assert "email" in user  # the creator sees its own view
    assert api.sql.user_loads == 1
    assert "password" not in first.text
    assert "hash" not in first.text


async def test_patch_then_get_returns_new_value_and_event_is_on_stream(
    make_api: ApiFactory, redis: Redis
) -> None:
    async with make_api(cache_invalidation="write", near_cache_size=0) as api, api.sessions():
        user = await api.create_user("Before")
        headers = await api.sign_in(user)
        assert (await api.client.get(f"/v1/users/{user['id']}")).status_code == 200
        patched = await api.client.patch(
            f"/v1/users/{user['id']}", json={"name": "After"}, headers=headers
        )
        assert patched.status_code == 200
        assert patched.json()["name"] == "After"
        again = await api.client.get(f"/v1/users/{user['id']}")
        assert again.json()["name"] == "After"
        assert again.headers["x-cache"] == "HIT"  # written through, not purged

        keys = Keys(api.settings.key_prefix)
        events = await eventually(
            lambda: _events_when(redis, keys, lambda e: len(e) == 2), "two events on the stream"
        )
        created, updated = events
        assert created.type == "user.created"
        assert str(created.payload.user_id) == user["id"]
        assert created.payload.email == user["email"]
        assert updated.type == "user.updated"
        assert str(updated.payload.user_id) == user["id"]
        assert updated.payload.changed == ("name",)
        assert updated.payload.version == round(
            datetime.fromisoformat(again.json()["updated_at"]).timestamp() * 1_000_000
        )
        assert updated.source == "api"


async def _events_when(redis: Redis, keys: Keys, ready: Any) -> list[Any] | None:
    events = await stream_events(redis, keys)
    return events if ready(events) else None


async def test_delete_then_get_is_404(api: Api) -> None:
    async with api.sessions(**detached(api)):
        user = await api.create_user()
        first, second = await api.sign_in(user), await api.sign_in(user)
        path = f"/v1/users/{user['id']}"
        assert (await api.client.get(path)).headers["x-cache"] == "MISS"
        assert (await api.client.delete(path, headers=first)).status_code == 204
        gone = await api.client.get(path)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "NOT_FOUND"
        # The first session ended with the delete; the second is not revoked yet.
        assert (await api.client.delete(path, headers=second)).status_code == 404


async def test_absent_user_is_negatively_cached(api: Api, redis: Redis) -> None:
    missing = uuid.uuid4()
    for _ in range(5):
        response = await api.client.get(f"/v1/users/{missing}")
        assert response.status_code == 404
    assert api.sql.user_loads == 1
    ttl_ms = await redis.pttl(Keys(api.settings.key_prefix).user(missing))
    assert 0 < ttl_ms <= api.settings.negative_cache_ttl * 1000


async def test_taken_email_is_409_case_insensitively(api: Api) -> None:
    user = await api.create_user()
    body = {"email": user["email"].upper(), "name": "Other", "password": "another-pw"}
    response = await api.client.post("/v1/users", json=body)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "EMAIL_TAKEN"
    other = await api.create_user()
    async with api.sessions():
        headers = await api.sign_in(other)
        clash = await api.client.patch(
            f"/v1/users/{other['id']}", json={"email": user["email"]}, headers=headers
        )
    assert clash.status_code == 409


async def test_cached_value_has_a_ttl(api: Api, redis: Redis) -> None:
    user = await api.create_user()
    await api.client.get(f"/v1/users/{user['id']}")
    ttl_ms = await redis.pttl(Keys(api.settings.key_prefix).user(user["id"]))
    assert 0 < ttl_ms <= api.settings.user_cache_ttl * 1000
    raw = await redis.get(Keys(api.settings.key_prefix).user(user["id"]))
    assert isinstance(raw, bytes)
    stored = orjson.loads(unversioned(raw))
    assert stored == public(user)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/users/not-a-uuid", None, 422),
        ("PATCH", "/v1/users/123", {"name": "x"}, 422),
        ("DELETE", "/v1/users/zzz", None, 422),
        ("GET", "/v1/users?limit=0", None, 422),
        ("GET", "/v1/users?limit=101", None, 422),
        ("GET", "/v1/users?page=0", None, 422),
        ("GET", "/v1/users?limit=ten", None, 422),
        ("POST", "/v1/users", {"email": "a@example.com", "name": "A"}, 422),
        ("POST", "/v1/users", {"email": "not-an-email", "name": "A", "password": "password1"}, 422),
        ("POST", "/v1/users", {"email": "a@example.com", "name": "", "password": "password1"}, 422),
        ("POST", "/v1/users", {"email": "a@example.com", "name": "A", "password": "short"}, 422),
        (
            "POST",
            "/v1/users",
            {"email": "a@example.com", "name": "A", "password": "password1", "admin": True},
            422,
        ),
        # {me}: the signed-in user; {gone}: the signed-in user, deleted; {other}: someone else.
        ("PATCH", "/v1/users/{me}", {}, 422),
        ("PATCH", "/v1/users/{me}", {"role": "admin"}, 422),
        ("PATCH", "/v1/users/{gone}", {"name": "New"}, 404),
        ("PATCH", "/v1/users/{other}", {"name": "New"}, 403),
        ("PUT", "/v1/users", None, 405),
        ("GET", "/v1/nowhere", None, 404),
    ],
)
async def test_bad_input_is_4xx_in_the_error_shape(
    api: Api, method: str, path: str, body: Any, status: int
) -> None:
    if "{" in path:
        async with api.sessions(**detached(api)):
            path, headers = await as_signed_in(api, path)
            response = await api.client.request(method, path, json=body, headers=headers)
    else:
        response = await api.client.request(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert error["message"]


async def as_signed_in(api: Api, path: str) -> tuple[str, dict[str, str]]:
    """`path` with its placeholder filled, and the headers of the signed-in user's session."""
    me = await api.create_user()
    headers = await api.sign_in(me)
    other = ""
    if "{gone}" in path:
        # Deleted through another of its sessions: the one in `headers` stays live.
        deleted = await api.client.delete(f"/v1/users/{me['id']}", headers=await api.sign_in(me))
        assert deleted.status_code == 204
    if "{other}" in path:
        other = (await api.create_user())["id"]
    return path.format(me=me["id"], gone=me["id"], other=other), headers


async def test_malformed_json_is_422_in_the_error_shape(api: Api) -> None:
    response = await api.client.post(
        "/v1/users", content=b'{"email": "a@', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_list_pages_are_cached_and_paged(api: Api) -> None:
    created = [await api.create_user(f"User {i}") for i in range(3)]
    first = await api.client.get("/v1/users?page=1&limit=2")
    second = await api.client.get("/v1/users?page=1&limit=2")
    page2 = await api.client.get("/v1/users?page=2&limit=2")
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert first.json() == second.json()
    assert first.json()["total"] == 3
    assert (first.json()["page"], first.json()["limit"]) == (1, 2)
    ids = [u["id"] for u in first.json()["items"] + page2.json()["items"]]
    assert ids == [u["id"] for u in created]
    assert api.sql.page_loads == 2


async def test_health_reports_every_component(api: Api) -> None:
    response = await api.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    for name in ("database", "redis", "cache"):
        assert body["components"][name]["status"] == "ok"
        assert body["components"][name]["latency_ms"] >= 0


async def test_metrics_count_cache_results(api: Api) -> None:
    user = await api.create_user()
    await api.client.get(f"/v1/users/{user['id']}")
    await api.client.get(f"/v1/users/{user['id']}")
    text = (await api.client.get("/metrics")).text
    assert 'cache_operations_total{op="get",result="hit"} 1.0' in text
    assert 'cache_operations_total{op="get",result="miss"} 1.0' in text
    assert 'http_requests_total{method="GET",route="/v1/users/{user_id}",status="200"} 2.0' in text


@pytest.mark.parametrize("name", ["\x00", "a\x00b", "line\nbreak"])
async def test_control_characters_in_a_name_are_422_not_500(api: Api, name: str) -> None:
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": name, "password": "password1"}
    response = await api.client.post("/v1/users", json=body)
    assert response.status_code == 422


async def test_emails_are_private_to_their_own_account(make_api: ApiFactory, redis: Redis) -> None:
    # Near cache on: its fast path must serve the public view too.
    async with make_api(near_cache_ttl="30s") as api:
        users = [await api.create_user(f"User {i}") for i in range(3)]
        assert all("email" in user for user in users)  # each creator sees its own view
        me = users[0]
        for _ in range(2):  # a miss, then a hit (near-cache fast path on the second read)
            listed = await api.client.get("/v1/users?limit=100")
            one = await api.client.get(f"/v1/users/{me['id']}")
            assert listed.status_code == one.status_code == 200
            assert [set(item) for item in listed.json()["items"]] == [
                {"id", "name", "created_at", "updated_at"}
            ] * 3
            assert one.json() == public(me)
            assert b"@" not in listed.content + one.content
        keys = Keys(api.settings.key_prefix)
        cached = [await redis.get(keys.user(me["id"]))]
        cached += [
            await redis.get(key) async for key in redis.scan_iter(f"{keys.prefix}:user:list:*")
        ]
        assert all(raw is None or b"@" not in raw for raw in cached)
        assert any(raw is not None for raw in cached)
        async with api.sessions():
            headers = await api.sign_in(me)
            mine = await api.client.get("/v1/users/me", headers=headers)
            patched = await api.client.patch(
                f"/v1/users/{me['id']}", json={"name": "Renamed"}, headers=headers
            )
        assert mine.json() == me
        assert patched.json()["email"] == me["email"]
