"""The fencing check (`shared.lock.FencedStore`) on a real server: a write with a fence below
the highest one seen is refused and changes nothing; equal and higher are written."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from shared.connections import RedisClient
from shared.errors import LockLostError
from shared.keys import Keys
from shared.lock import FencedStore, lock
from shared.replication import Replication, ReplicaWait


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


async def test_a_lower_fence_is_refused_equal_and_higher_are_written(
    redis: RedisClient, keys: Keys
) -> None:
    store = FencedStore(redis, keys, "report")
    assert await store.highest() == 0
    first = await store.set("latest", "five", 5)
    assert first.written
    assert first.replication is Replication.OFF  # no ReplicaWait given
    assert (await store.set("latest", "five again", 5)).written  # one holder, many writes
    assert not (await store.set("latest", "four", 4)).written
    assert await store.get("latest") == b"five again"  # the refused write changed nothing
    assert await store.highest() == 5
    assert (await store.set("latest", "seven", 7)).written
    assert not (await store.set("latest", "six", 6)).written
    assert not (await store.set("other", "six", 6)).written  # the fence is per resource
    assert await store.get("other") is None
    assert await store.get("latest") == b"seven"
    assert await store.highest() == 7


async def test_the_highest_fence_never_expires_a_value_may(redis: RedisClient, keys: Keys) -> None:
    store = FencedStore(redis, keys, "ttl")
    assert (await store.set("v", b"x", 1, ttl=60.0)).written
    assert 0 < await redis.pttl(keys.lock_data("ttl", "v")) <= 60_000
    assert await redis.ttl(keys.lock_fence_seen("ttl")) == -1


async def test_fences_are_positive(redis: RedisClient, keys: Keys) -> None:
    with pytest.raises(ValueError, match="positive"):
        await FencedStore(redis, keys, "zero").set("v", "x", 0)


def test_a_fenced_write_touches_one_slot(keys: Keys) -> None:
    slots = {
        key_slot(key.encode())
        for key in (
            keys.lock("r"),
            keys.lock_fence("r"),
            keys.lock_fence_seen("r"),
            keys.lock_data("r", "a:b"),
        )
    }
    assert len(slots) == 1


async def test_a_holder_that_lost_its_lease_is_refused_once_the_next_writes(
    redis: RedisClient, keys: Keys
) -> None:
    store = FencedStore(redis, keys, "paused")
    old = lock(redis, keys, "paused", ttl=0.15, renew=False, cancel_on_loss=False)
    held_old = await old.__aenter__()
    assert (await store.set("v", "old", held_old.fence)).written
    # The old holder is paused past its lease; the next one takes the lock (waits it out).
    async with lock(redis, keys, "paused", ttl=5.0, timeout=3.0) as held_new:
        assert held_new.fence > held_old.fence
        assert (await store.set("v", "new", held_new.fence)).written
        # The old holder wakes and writes as if it still held the lock: refused.
        assert not (await store.set("v", "old, stale", held_old.fence)).written
    with pytest.raises(LockLostError):
        await old.__aexit__(None, None, None)
    assert await store.get("v") == b"new"


async def test_with_a_replica_wait_the_replication_is_reported(
    redis: RedisClient, keys: Keys
) -> None:
    store = FencedStore(redis, keys, "waited", replicas=ReplicaWait(redis, 500))
    written = await store.set("v", "x", 1)
    assert written.written
    # The run's Redis: a lone server, or a topology whose primaries have a replica each.
    assert written.replication in {Replication.NO_REPLICA, Replication.CONFIRMED}
