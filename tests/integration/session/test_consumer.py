"""Group `session` in the app's lifespan, on a real Redis: events revoke sessions."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from redis.asyncio import Redis

from devtools.polling import eventually
from shared.events import (
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    UserEvent,
    UserPasswordChanged,
    UserPasswordChangedPayload,
)
from shared.keys import SESSION_GROUP, Keys
from shared.sessionids import session_hash as hash_session_id
from tests.integration.session.conftest import SettingsFactory, serve

LAG_BOUND = 5.0  # seconds; the consumer blocks 100 ms per read in these tests


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, what, within=LAG_BOUND)


async def publish(redis: Redis, key_prefix: str, event: UserEvent) -> None:
    await redis.xadd(Keys(key_prefix).user_events(), event.fields())  # type: ignore[arg-type]  # bytes values are valid fields


async def new_session(client: httpx.AsyncClient, user: str) -> str:
    response = await client.post("/v1/sessions", json={"user_id": user})
    assert response.status_code == 201
    return str(response.json()["id"])


async def alive(client: httpx.AsyncClient, sid: str) -> bool:
    return (await client.get(f"/v1/sessions/{sid}")).status_code == 200


async def test_user_deleted_revokes_every_session(
    session_settings: SettingsFactory, redis: Redis, key_prefix: str
) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    async with serve(session_settings()) as client:
        ids = [await new_session(client, str(user)) for _ in range(3)]
        bystander = await new_session(client, str(other))
        await publish(
            redis, key_prefix, UserDeleted(source="api", payload=UserDeletedPayload(user_id=user))
        )

        async def all_gone() -> bool:
            return not any([await alive(client, sid) for sid in ids])

        await until(all_gone, "sessions of a deleted user revoked")
        assert await alive(client, bystander)
        assert (await client.get(f"/v1/users/{user}/sessions")).json() == {"items": []}


async def test_password_change_keeps_the_changing_session_and_its_successor(
    session_settings: SettingsFactory, redis: Redis, key_prefix: str
) -> None:
    user = uuid.uuid4()
    async with serve(session_settings()) as client:
        current = await new_session(client, str(user))
        others = [await new_session(client, str(user)) for _ in range(2)]
        payload = UserPasswordChangedPayload(user_id=user, keep_session=hash_session_id(current))
        # As the api does: the event is committed first, then the current session rotated.
        event = UserPasswordChanged(source="api", payload=payload)
        rotated = (await client.post(f"/v1/sessions/{current}/rotate")).json()["id"]
        await publish(redis, key_prefix, event)

        async def others_gone() -> bool:
            return not any([await alive(client, sid) for sid in others])

        await until(others_gone, "other sessions revoked after a password change")
        assert await alive(client, rotated)


async def test_redelivered_password_change_spares_later_sign_ins(
    session_settings: SettingsFactory, redis: Redis, key_prefix: str
) -> None:
    user = uuid.uuid4()
    async with serve(session_settings()) as client:
        before = await new_session(client, str(user))
        event = UserPasswordChanged(source="api", payload=UserPasswordChangedPayload(user_id=user))
        await publish(redis, key_prefix, event)

        async def before_gone() -> bool:
            return not await alive(client, before)

        await until(before_gone, "pre-change session revoked")

        # A sign-in after the change (past the clock margin, by the server's clock) ...
        cutoff = event.occurred_at + timedelta(seconds=1.05)

        async def past_cutoff() -> bool:
            seconds, micros = await redis.time()
            return datetime.fromtimestamp(seconds + micros / 1e6, UTC) > cutoff

        await until(past_cutoff, "server clock past the cut-off")
        later = await new_session(client, str(user))
        # ... survives the same event delivered again (same envelope, same id).
        await publish(redis, key_prefix, event)
        marker = UserCreated(
            source="api",
            payload=UserCreatedPayload(user_id=uuid.uuid4(), email="m@example.com", name="m"),
        )
        await publish(redis, key_prefix, marker)

        async def marker_handled() -> bool:
            groups = await redis.xinfo_groups(Keys(key_prefix).user_events())
            mine = next(g for g in groups if g["name"] == SESSION_GROUP.encode())
            newest = await redis.xrevrange(Keys(key_prefix).user_events(), count=1) or []
            return int(mine["pending"]) == 0 and mine["last-delivered-id"] == newest[0][0]

        await until(marker_handled, "both entries consumed and acked")
        assert await alive(client, later)


async def test_bad_entries_are_dead_lettered_not_fatal(
    session_settings: SettingsFactory, redis: Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    user = uuid.uuid4()
    async with serve(session_settings()) as client:
        sid = await new_session(client, str(user))
        await redis.xadd(keys.user_events(), {"data": b"{not json"})
        await publish(
            redis, key_prefix, UserDeleted(source="api", payload=UserDeletedPayload(user_id=user))
        )

        async def revoked() -> bool:
            return not await alive(client, sid)

        await until(revoked, "the entry after a malformed one handled")
        letters = await redis.xrange(keys.dead_letters()) or []
        groups = [(fields or {}).get(b"dlq:group") for _, fields in letters]
        assert groups == [b"*"]  # no group can parse it: one letter for every group
