"""Create → get → refresh → rotate → destroy, on the real store behind the HTTP API."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import httpx
from redis.asyncio import Redis

from devtools.polling import eventually
from shared.events import SessionCreated, SessionDestroyed, parse_entry
from shared.keys import Keys
from tests.integration.session.conftest import SettingsFactory, serve

FIELDS = {"user_id", "data", "created_at", "last_seen_at", "expires_at", "absolute_expires_at"}


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def create(client: httpx.AsyncClient, user: str, **data: object) -> dict[str, object]:
    response = await client.post("/v1/sessions", json={"user_id": user, "data": data})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_lifecycle(client: httpx.AsyncClient) -> None:
    user = str(uuid.uuid4())
    created = await create(client, user, role="reader")
    sid = str(created["id"])
    assert set(created) == FIELDS | {"id"}
    assert len(sid) >= 43  # 32 random bytes, url-safe base64
    assert created["user_id"] == user

    got = await client.get(f"/v1/sessions/{sid}")
    assert got.status_code == 200
    assert set(got.json()) == FIELDS  # the id is never shown again
    assert got.json()["data"] == {"role": "reader"}

    await asyncio.sleep(0.01)  # not a wait: the server clock must move a ms or more
    refreshed = (await client.post(f"/v1/sessions/{sid}/refresh")).json()
    assert at(refreshed["expires_at"]) > at(str(created["expires_at"]))
    assert at(refreshed["last_seen_at"]) > at(str(created["last_seen_at"]))
    assert refreshed["absolute_expires_at"] == created["absolute_expires_at"]

    rotated = await client.post(f"/v1/sessions/{sid}/rotate")
    assert rotated.status_code == 201
    new_id = rotated.json()["id"]
    assert new_id != sid
    assert (await client.get(f"/v1/sessions/{sid}")).status_code == 404
    kept = (await client.get(f"/v1/sessions/{new_id}")).json()
    assert kept["data"] == {"role": "reader"}
    assert kept["user_id"] == user
    assert kept["absolute_expires_at"] == created["absolute_expires_at"]  # rotation never extends
    assert (await client.post(f"/v1/sessions/{sid}/rotate")).status_code == 404

    assert (await client.delete(f"/v1/sessions/{new_id}")).status_code == 204
    assert (await client.delete(f"/v1/sessions/{new_id}")).status_code == 204  # idempotent
    assert (await client.get(f"/v1/sessions/{new_id}")).status_code == 404
    assert (await client.post(f"/v1/sessions/{new_id}/refresh")).status_code == 404


async def test_404_body_is_the_common_error_shape(client: httpx.AsyncClient) -> None:
    unknown = uuid.uuid4().hex + "A" * 43  # well formed, never issued
    for path in ("/v1/sessions/short", "/v1/sessions/" + "A" * 43, "/v1/sessions/" + unknown):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "SESSION_NOT_FOUND"


async def test_refresh_never_passes_the_absolute_expiry(session_settings: SettingsFactory) -> None:
    settings = session_settings(session_idle_ttl="1s", session_absolute_ttl="1500ms")
    async with serve(settings) as client:
        created = await create(client, str(uuid.uuid4()))
        sid, absolute = created["id"], at(str(created["absolute_expires_at"]))
        assert at(str(created["expires_at"])) < absolute
        capped = False

        async def ended() -> bool:
            # Each refresh keeps the session alive, up to the cap and never past it.
            nonlocal capped
            response = await client.post(f"/v1/sessions/{sid}/refresh")
            if response.status_code == 404:
                return True
            expires = at(response.json()["expires_at"])
            assert expires <= absolute
            capped = capped or expires == absolute
            return False

        await eventually(ended, "the refreshed session ends", within=5, every=0.05)
        assert capped, "refresh never reached the absolute expiry"
        assert (await client.get(f"/v1/sessions/{sid}")).status_code == 404
        assert datetime.now(absolute.tzinfo) >= absolute


async def test_idle_sessions_expire_and_leave_list_and_index(
    session_settings: SettingsFactory, redis: Redis, key_prefix: str
) -> None:
    settings = session_settings(session_idle_ttl="300ms")
    user = str(uuid.uuid4())
    index = Keys(key_prefix).user_sessions(user)
    async with serve(settings) as client:
        first = await create(client, user)
        await create(client, user)
        assert await redis.zcard(index) == 2

        async def expired() -> bool:
            return (await client.get(f"/v1/sessions/{first['id']}")).status_code == 404

        await eventually(expired, "the idle session expires", within=5, every=0.05)
        assert (await client.get(f"/v1/users/{user}/sessions")).json() == {"items": []}
        assert await redis.zcard(index) == 0
        # A new session after the old ones died: the index holds only it, and has a TTL.
        await create(client, user)
        assert await redis.zcard(index) == 1
        assert 0 < await redis.pttl(index) <= 300


async def test_cap_evicts_the_oldest(session_settings: SettingsFactory) -> None:
    user = str(uuid.uuid4())
    async with serve(session_settings(session_max_per_user=2)) as client:
        ids = []
        for _ in range(3):  # not polling: three sessions, a few ms apart
            ids.append((await create(client, user))["id"])
            await asyncio.sleep(0.005)  # distinct expiry scores
        assert (await client.get(f"/v1/sessions/{ids[0]}")).status_code == 404
        for sid in ids[1:]:
            assert (await client.get(f"/v1/sessions/{sid}")).status_code == 200
        listed = (await client.get(f"/v1/users/{user}/sessions")).json()["items"]
        assert len(listed) == 2


async def test_list_and_revoke_all(client: httpx.AsyncClient) -> None:
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    ids = [(await create(client, user, n=n))["id"] for n in range(3)]
    survivor = (await create(client, other))["id"]

    listed = (await client.get(f"/v1/users/{user}/sessions")).json()["items"]
    assert sorted(item["data"]["n"] for item in listed) == [0, 1, 2]
    assert all(len(item["hash_prefix"]) == 16 and "id" not in item for item in listed)

    revoked = await client.delete(f"/v1/users/{user}/sessions")
    assert revoked.status_code == 200
    assert revoked.json() == {"revoked": 3}
    for sid in ids:
        assert (await client.get(f"/v1/sessions/{sid}")).status_code == 404
    assert (await client.get(f"/v1/sessions/{survivor}")).status_code == 200
    assert (await client.delete(f"/v1/users/{user}/sessions")).json() == {"revoked": 0}
    assert (await client.get(f"/v1/users/{user}/sessions")).json() == {"items": []}


async def test_bad_user_id_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/users/not-a-uuid/sessions")).status_code == 422
    response = await client.post("/v1/sessions", json={"user_id": "{x}"})
    assert response.status_code == 422
    too_big = {"user_id": str(uuid.uuid4()), "data": {"blob": "x" * 5000}}
    assert (await client.post("/v1/sessions", json=too_big)).status_code == 422


async def test_events_on_the_stream(
    client: httpx.AsyncClient, redis: Redis, key_prefix: str
) -> None:
    user = str(uuid.uuid4())
    sid = (await create(client, user))["id"]
    new_id = (await client.post(f"/v1/sessions/{sid}/rotate")).json()["id"]
    await client.delete(f"/v1/sessions/{new_id}")
    entries = await redis.xrange(Keys(key_prefix).user_events()) or []
    events = [parse_entry(fields or {}) for _, fields in entries]
    kinds = [(e.type, getattr(e.payload, "reason", None)) for e in events]
    assert kinds == [
        ("session.created", None),
        ("session.destroyed", "rotated"),
        ("session.created", None),
        ("session.destroyed", "logout"),
    ]
    assert all(str(e.payload.user_id) == user for e in events)
    created = [e for e in events if isinstance(e, SessionCreated)]
    destroyed = [e for e in events if isinstance(e, SessionDestroyed)]
    assert created[0].payload.session_hash == destroyed[0].payload.session_hash


async def test_data_comes_back_exactly_as_sent(client: httpx.AsyncClient) -> None:
    # Integers beyond 64 bits are valid JSON a caller may send; the session must hand them
    # back unchanged (orjson would refuse or round them). Lone surrogates are not text: 422.
    data = {"big": -94424243145807535198437376, "astral": "\U0001f600", "nested": {"x": [None]}}
    lone = json.dumps({"user_id": str(uuid.uuid4()), "data": {"odd": "\udb1d"}})
    refused = await client.post(
        "/v1/sessions", content=lone, headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 422
    body = json.dumps({"user_id": str(uuid.uuid4()), "data": data})
    created = await client.post(
        "/v1/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert created.status_code == 201, created.text
    fetched = await client.get(f"/v1/sessions/{created.json()['id']}")
    assert json.loads(fetched.text)["data"] == data
