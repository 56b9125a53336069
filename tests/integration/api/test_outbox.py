"""The transactional outbox on real PostgreSQL and Redis: no event lost, none without commit."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

from redis.asyncio import Redis
from sqlalchemy import func, select

from api.adapters.orm import OutboxRow, UserRow, utcnow
from api.adapters.repository import UserRepository
from api.errors import EmailTakenError
from devtools.redis_server import RedisServer
from shared.events import UserCreated, UserCreatedPayload, UserEvent, parse_entry
from shared.keys import Keys

from .conftest import Api, ApiFactory, wait_until


async def stream_ids(redis: Redis, keys: Keys) -> list[str]:
    entries = await redis.xrange(keys.user_events()) or []
    return [str(parse_entry(f or {}).id) for _, f in entries]


async def outbox_ids(api: Api, *, pending: bool | None = None) -> list[str]:
    statement = select(OutboxRow.id)
    if pending is not None:
        statement = statement.where(
            OutboxRow.published_at.is_(None) if pending else OutboxRow.published_at.is_not(None)
        )
    async with api.state.db() as session:
        return [str(i) for i in (await session.execute(statement)).scalars()]


async def test_relay_publishes_right_after_commit_not_at_the_next_poll(
    make_api: ApiFactory, redis: Redis
) -> None:
    async with make_api(outbox_poll_interval="60s") as api:
        await api.create_user()
        keys = Keys(api.settings.key_prefix)
        # The poll is a minute away: only the post-commit wake-up can publish this in time.
        published = await wait_until(lambda: stream_ids(redis, keys), timeout=5)
        assert published == await outbox_ids(api)


async def test_events_committed_while_redis_is_down_reach_the_stream_exactly_once(
    make_api: ApiFactory, redis_server_factory: Callable[..., RedisServer], redis_url: str
) -> None:
    # AOF with fsync always: what the relay published before the crash survives it.
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "always")
    # The sessions the PATCH and DELETE need live on another Redis (and their events on its
    # stream): what is killed here is the api's own Redis.
    async with (
        make_api(redis_url=server.url, outbox_poll_interval="60s") as api,
        api.sessions(redis_url=redis_url),
    ):
        keys = Keys(api.settings.key_prefix)
        before = [await api.create_user(f"Before {i}") for i in range(3)]
        probe = Redis.from_url(server.url)
        try:
            await wait_until(lambda: _count_is(probe, keys, 3))
        finally:
            await probe.aclose()

        server.kill()
        during = [await api.create_user(f"During {i}") for i in range(5)]
        patched = await api.client.patch(
            f"/v1/users/{before[0]['id']}", json={"name": "Z"}, headers=await api.sign_in(before[0])
        )
        deleted = await api.client.delete(
            f"/v1/users/{during[0]['id']}", headers=await api.sign_in(during[0])
        )
        assert (patched.status_code, deleted.status_code) == (200, 204)  # writes still commit
        assert len(await outbox_ids(api, pending=True)) == 7

        server.start()
        probe = Redis.from_url(server.url)
        try:
            await wait_until(lambda: _count_is(probe, keys, 10), timeout=15)
            published = await stream_ids(probe, keys)
        finally:
            await probe.aclose()
        committed = await outbox_ids(api)
        assert await outbox_ids(api, pending=True) == []

    assert Counter(published) == Counter(committed)
    assert max(Counter(published).values()) == 1


async def _count_is(redis: Redis, keys: Keys, count: int) -> bool:
    return bool(await redis.xlen(keys.user_events()) == count)


async def test_a_rolled_back_write_leaves_no_event(api: Api, redis: Redis) -> None:
    taken = await api.create_user()
    service = api.state.users
    staged: list[UserEvent] = []

    async def racing_insert(repo: UserRepository) -> tuple[UserRow, UserEvent]:
        # Skips the email check, as a racing writer would: the unique index refuses it at
        # commit, after the event was staged in the same transaction.
        row = UserRow(id=uuid.uuid4(), email=taken["email"], name="Dup", password_hash="x")
        row.created_at = row.updated_at = utcnow()
        repo.add(row)
        payload = UserCreatedPayload(user_id=row.id, email=row.email, name=row.name)
        staged.append(UserCreated(source="api", payload=payload))
        return row, staged[-1]

    try:
        await service._write(racing_insert)
    except EmailTakenError:
        pass
    else:
        raise AssertionError("the duplicate email was committed")
    conflict = await api.client.post(
        "/v1/users", json={"email": taken["email"], "name": "Again", "password": "password1"}
    )
    assert conflict.status_code == 409

    keys = Keys(api.settings.key_prefix)
    await wait_until(lambda: stream_ids(redis, keys))  # the first user's event, at least
    assert str(staged[0].id) not in await outbox_ids(api)
    assert str(staged[0].id) not in await stream_ids(redis, keys)
    async with service.db() as session:
        rows = (await session.execute(select(func.count()).select_from(OutboxRow))).scalar_one()
    assert rows == 1


async def test_two_relays_publish_each_row_once(make_api: ApiFactory, redis: Redis) -> None:
    async with make_api() as first, make_api() as second:
        for i in range(20):
            target = first if i % 2 else second
            await target.create_user(f"U{i}")
        keys = Keys(first.settings.key_prefix)
        await wait_until(lambda: _count_is(redis, keys, 20), timeout=10)
        first.state.relay.notify()
        second.state.relay.notify()
        published = await stream_ids(redis, keys)
        assert sorted(published) == sorted(await outbox_ids(first))
        assert len(set(published)) == 20
