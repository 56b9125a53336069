"""The invalidator spares a cached value at least as new as the change it purges for.

A writer stores the new value right after its commit (write-through); the event of that
commit reaches the invalidator milliseconds later and must not throw the new value away
(readers would miss again), while an older value is purged as before.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from invalidator.usecases import Purger
from shared.cache import versioned
from shared.events import (
    UserDeleted,
    UserDeletedPayload,
    UserEvent,
    UserPasswordChanged,
    UserPasswordChangedPayload,
    UserUpdated,
    UserUpdatedPayload,
)
from shared.keys import Keys
from shared.streams import Delivery

V = 1_796_000_000_000_000  # a version: updated_at in µs


def delivery(event: UserEvent, n: int) -> Delivery:
    return Delivery(f"{n}-0", event, {}, 1)


async def cached(redis: Redis, keys: Keys, uid: uuid.UUID, version: int | None) -> None:
    data = b'{"id": "x"}'
    await redis.set(keys.user(uid), data if version is None else versioned(data, version))
    await redis.set(keys.user_lease(uid), b"token")


async def test_only_values_older_than_the_event_are_purged(redis: Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    purger = Purger(redis, keys)
    newer, older, same, unversioned, no_event_version = (uuid.uuid4() for _ in range(5))
    await cached(redis, keys, newer, V + 5)  # the writer's write-through, after the event's
    await cached(redis, keys, older, V - 5)
    await cached(redis, keys, same, V)
    await cached(redis, keys, unversioned, None)
    await cached(redis, keys, no_event_version, V + 5)
    events: list[UserEvent] = [
        UserUpdated(source="t", payload=UserUpdatedPayload(user_id=newer, version=V)),
        UserUpdated(source="t", payload=UserUpdatedPayload(user_id=older, version=V)),
        UserPasswordChanged(
            source="t", payload=UserPasswordChangedPayload(user_id=same, version=V)
        ),
        UserUpdated(source="t", payload=UserUpdatedPayload(user_id=unversioned, version=V)),
        UserUpdated(source="t", payload=UserUpdatedPayload(user_id=no_event_version)),
    ]
    assert await purger([delivery(e, i) for i, e in enumerate(events)]) == {}
    assert await redis.exists(keys.user(newer)) == 1
    assert await redis.exists(keys.user(same)) == 1  # as new as the change: kept
    for gone in (older, unversioned, no_event_version):
        assert await redis.exists(keys.user(gone), keys.user_lease(gone)) == 0


async def test_a_delete_in_the_batch_purges_whatever_is_cached(
    redis: Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    uid = uuid.uuid4()
    await cached(redis, keys, uid, V + 100)
    batch = [
        delivery(UserUpdated(source="t", payload=UserUpdatedPayload(user_id=uid, version=V)), 1),
        delivery(UserDeleted(source="t", payload=UserDeletedPayload(user_id=uid)), 2),
    ]
    assert await Purger(redis, keys)(batch) == {}
    assert await redis.exists(keys.user(uid), keys.user_lease(uid)) == 0
