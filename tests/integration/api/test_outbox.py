"""The transactional outbox on real PostgreSQL and Redis: no event lost, none without commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text

from api.adapters.orm import OutboxRow, UserRow, utcnow
from devtools.polling import eventually
from devtools.redis_server import RedisServer
from shared.events import parse_entry
from shared.keys import Keys
from shared.replication import Replication
from tests.conftest import RedisTopology

from .conftest import Api, ApiFactory


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
        published = await eventually(
            lambda: stream_ids(redis, keys), "an event on the stream", within=5
        )
        assert published == await outbox_ids(api)


async def _relay_rounds(api: Api) -> float:
    """Batches the relay has published (each counts once under its replica outcome)."""
    registry = api.state.metrics.registry
    return sum(
        registry.get_sample_value("outbox_replica_acks_total", {"outcome": o.value}) or 0.0
        for o in Replication
    )


@pytest.mark.parametrize(("linger", "rounds"), [("1s", 1), ("0", 3)])
async def test_commits_within_the_linger_share_one_relay_round(
    make_api: ApiFactory, redis: Redis, linger: str, rounds: int
) -> None:
    # Three renames 50 ms apart. Lingering, the first commit's wake-up waits and the two that
    # follow join its round: one transaction, one XADD script, one wake-up per consumer group.
    # With OUTBOX_LINGER=0 each commit is published at once, in a round of its own.
    async with make_api(outbox_poll_interval="60s", outbox_linger=linger) as api, api.sessions():
        keys = Keys(api.settings.key_prefix)
        user = await api.create_user()
        headers = await api.sign_in(user)
        # The sign-up's own event out first, so only the renames are counted.
        await eventually(lambda: _none_pending(api), "the sign-up's event published")
        before, entries = await _relay_rounds(api), await redis.xlen(keys.user_events())
        started = time.monotonic()
        for i in range(3):  # not polling: three writes spaced in time
            renamed = await api.client.patch(
                f"/v1/users/{user['id']}", json={"name": f"Burst {i}"}, headers=headers
            )
            assert renamed.status_code == 200, renamed.text
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        await eventually(lambda: _count_is(redis, keys, entries + 3), "the renames' events")
        # A round counts itself before it marks its rows sent.
        await eventually(lambda: _none_pending(api), "every outbox row marked published")
        assert await _relay_rounds(api) - before == rounds, f"the renames took {took:.2f}s"
        assert set(await outbox_ids(api)) <= set(await stream_ids(redis, keys))


async def test_events_committed_while_redis_is_down_reach_the_stream_exactly_once(
    make_api: ApiFactory,
    redis_server_factory: Callable[..., RedisServer],
    redis_topology: RedisTopology,
) -> None:
    # AOF with fsync always: what the relay published before the crash survives it.
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "always")
    # The sessions the PATCH and DELETE need live on another Redis (and their events on its
    # stream): what is killed here is the api's own Redis.
    async with (
        make_api(redis_url=server.url, outbox_poll_interval="60s") as api,
        api.sessions(**redis_topology.settings()),
    ):
        keys = Keys(api.settings.key_prefix)
        before = [await api.create_user(f"Before {i}") for i in range(3)]
        probe = Redis.from_url(server.url)
        try:
            await eventually(lambda: _count_is(probe, keys, 3), "3 events on the stream")
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
            await eventually(
                lambda: _count_is(probe, keys, 10), "10 events on the stream", within=15
            )
            published = await stream_ids(probe, keys)
        finally:
            await probe.aclose()
        # The relay marks a batch published in the transaction it commits after its XADDs:
        # the entries can be on the stream a moment before their rows say so.
        await eventually(lambda: _none_pending(api), "every outbox row marked published")
        committed = await outbox_ids(api)

    assert Counter(published) == Counter(committed)
    assert max(Counter(published).values()) == 1


async def _none_pending(api: Api) -> bool:
    return await outbox_ids(api, pending=True) == []


async def _count_is(redis: Redis, keys: Keys, count: int) -> bool:
    return bool(await redis.xlen(keys.user_events()) == count)


async def _an_insert_waits_on_a_lock(api: Api) -> bool:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO users%'"
    )
    async with api.state.db() as session:
        return bool((await session.execute(query)).scalar_one())


async def test_a_rolled_back_write_leaves_no_event(api: Api, redis: Redis) -> None:
    # A racing writer holds the new email in a transaction it has not committed: the api's
    # email check cannot see it, so the api stages its row and its event, and its INSERT waits
    # on the unique index. Once the racer commits, the index refuses the api's row, and the
    # whole transaction, the event with it, rolls back.
    if api.state.engine.dialect.name != "postgresql":
        pytest.skip("the api's INSERT waiting on another transaction's key is PostgreSQL's")
    await api.create_user()  # one event that is committed, for the relay to publish
    email = f"{uuid.uuid4().hex}@example.com"
    body = {"email": email, "name": "Dup", "password": "password1"}
    async with api.state.db() as racer, racer.begin():
        row = UserRow(id=uuid.uuid4(), email=email, name="Racer", password_hash="x")
        row.created_at = row.updated_at = utcnow()
        racer.add(row)
        await racer.flush()
        attempt = asyncio.create_task(api.client.post("/v1/users", json=body))
        await eventually(
            lambda: _an_insert_waits_on_a_lock(api), "the api's INSERT waits on the racer's key"
        )
    refused = await attempt  # the racer has committed: the unique index decides
    assert refused.status_code == 409, refused.text

    keys = Keys(api.settings.key_prefix)
    published = await eventually(lambda: stream_ids(redis, keys), "the first user's event")
    assert await outbox_ids(api) == published  # the refused write staged nothing that stayed
    assert len(published) == 1


async def test_two_relays_publish_each_row_once(make_api: ApiFactory, redis: Redis) -> None:
    async with make_api() as first, make_api() as second:
        for i in range(20):
            target = first if i % 2 else second
            await target.create_user(f"U{i}")
        keys = Keys(first.settings.key_prefix)
        await eventually(lambda: _count_is(redis, keys, 20), "20 events on the stream")
        first.state.relay.notify()
        second.state.relay.notify()
        published = await stream_ids(redis, keys)
        assert sorted(published) == sorted(await outbox_ids(first))
        assert len(set(published)) == 20
