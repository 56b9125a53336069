"""The Redis lock on a real server: mutual exclusion, loss, renewal, fencing, safe release."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from redis.asyncio import Redis

from shared.connections import RedisClient
from shared.errors import LockLostError, LockNotAcquiredError
from shared.keys import Keys
from shared.lock import lock
from shared.replication import Replication, ReplicaWait

FAST = (0.001, 0.01)  # short backoff: 20 contenders must not spend the test asleep


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


async def _increment(redis: Redis, key: str) -> None:
    # A read-modify-write with a yield in the middle: loses updates unless serialised.
    value = int(await redis.get(key) or 0)
    await asyncio.sleep(0)
    await redis.set(key, value + 1)


async def test_no_lost_update_under_the_lock(redis: Redis, keys: Keys) -> None:
    counter = f"{keys.prefix}:counter"

    async def worker() -> None:
        for _ in range(50):
            async with lock(redis, keys, "counter", ttl=5.0, backoff=FAST):
                await _increment(redis, counter)

    await asyncio.gather(*(worker() for _ in range(20)))
    assert int(await redis.get(counter) or 0) == 1000


async def test_the_same_work_without_the_lock_loses_updates(redis: Redis, keys: Keys) -> None:
    # The control for the test above: proves that the workload can lose updates at all.
    counter = f"{keys.prefix}:unlocked"

    async def worker() -> None:
        for _ in range(50):
            await _increment(redis, counter)

    await asyncio.gather(*(worker() for _ in range(20)))
    assert int(await redis.get(counter) or 0) < 1000


async def test_holder_without_renewal_is_told_when_its_ttl_passes(redis: Redis, keys: Keys) -> None:
    started = time.monotonic()
    never = asyncio.Event()
    with pytest.raises(LockLostError):
        async with lock(redis, keys, "paused", ttl=0.2, renew=False) as held:
            # A paused holder: it would wait for ever; the loss cancels it.
            await asyncio.wait_for(never.wait(), timeout=10)
    elapsed = time.monotonic() - started
    assert held.lost
    assert 0.2 <= elapsed < 1.0
    # The lease is gone in Redis too: somebody else gets it, with a higher fence.
    async with lock(redis, keys, "paused", ttl=1.0, timeout=1.0) as other:
        assert other.fence > held.fence


async def test_holder_frozen_past_its_ttl_is_cancelled_when_it_wakes(
    redis: Redis, keys: Keys
) -> None:
    reached_after_pause = False
    lost: list[bool] = []

    async def frozen_holder() -> None:
        nonlocal reached_after_pause
        async with lock(redis, keys, "frozen", ttl=0.2) as held:
            try:
                # Simulates a stop-the-world pause (GC, VM steal): loop and renewal freeze.
                # not a wait: the pause is the point of this test
                time.sleep(0.4)  # noqa: ASYNC251
                await asyncio.sleep(5)  # not a wait: held until the lost lease cancels it
                reached_after_pause = True
            finally:
                lost.append(held.lost)

    with pytest.raises(LockLostError):
        await frozen_holder()
    assert lost == [True]
    assert not reached_after_pause
    assert await redis.get(keys.lock("frozen")) is None


async def test_renewal_keeps_a_long_holder_safe(redis: Redis, keys: Keys) -> None:
    contender_got_it = False

    async def contender(stop: asyncio.Event) -> None:
        nonlocal contender_got_it
        while not stop.is_set():  # not polling: contends until told to stop
            try:
                async with lock(redis, keys, "long", ttl=0.3, timeout=0):
                    contender_got_it = True
            except LockNotAcquiredError:
                await asyncio.sleep(0.02)

    stop = asyncio.Event()
    async with lock(redis, keys, "long", ttl=0.3) as held:
        task = asyncio.create_task(contender(stop))
        # not a wait: four TTLs pass; without renewal the contender would win
        await asyncio.sleep(1.2)
        stop.set()
        assert not held.lost
        assert await redis.get(keys.lock("long")) == held.token.encode()
    await task
    assert not contender_got_it


async def test_fencing_numbers_strictly_increase(redis: Redis, keys: Keys) -> None:
    seen: list[int] = []

    async def worker() -> None:
        for _ in range(10):
            async with lock(redis, keys, "fence", ttl=5.0, backoff=FAST) as held:
                seen.append(held.fence)
                await asyncio.sleep(0)  # yield while holding: others must wait

    await asyncio.gather(*(worker() for _ in range(5)))
    assert len(seen) == 50
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert int(await redis.get(keys.lock_fence("fence")) or 0) == seen[-1]


async def test_stale_release_does_not_delete_another_holders_key(redis: Redis, keys: Keys) -> None:
    key = keys.lock("stale")
    old = lock(redis, keys, "stale", ttl=0.15, renew=False, cancel_on_loss=False)
    held_old = await old.__aenter__()
    new = lock(redis, keys, "stale", ttl=5.0, timeout=2.0, backoff=FAST)
    held_new = await new.__aenter__()  # waits until the old lease expires
    with pytest.raises(LockLostError):
        await old.__aexit__(None, None, None)
    assert held_old.lost
    assert await redis.get(key) == held_new.token.encode()
    await new.__aexit__(None, None, None)
    assert await redis.get(key) is None


async def test_cancelled_holder_releases_and_stays_cancelled(redis: Redis, keys: Keys) -> None:
    inside = asyncio.Event()

    async def holder() -> None:
        async with lock(redis, keys, "cancel", ttl=5.0):
            inside.set()
            await asyncio.sleep(10)  # not a wait: held until cancelled

    task = asyncio.create_task(holder())
    await asyncio.wait_for(inside.wait(), timeout=5)
    assert await redis.exists(keys.lock("cancel")) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.exists(keys.lock("cancel")) == 0


async def test_acquisition_times_out_with_backoff(redis: Redis, keys: Keys) -> None:
    async with lock(redis, keys, "busy", ttl=5.0):
        started = time.monotonic()
        with pytest.raises(LockNotAcquiredError, match="attempts"):
            async with lock(redis, keys, "busy", ttl=5.0, timeout=0.3):
                pytest.fail("acquired a lock that is held")
        elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 0.6
    fence_before = int(await redis.get(keys.lock_fence("busy")) or 0)
    assert fence_before == 1  # failed attempts take no fence number


async def test_with_a_replica_wait_a_lock_still_excludes_and_says_what_it_knows(
    redis: RedisClient, keys: Keys
) -> None:
    # Where there is nothing to wait for (a lone server) or a replica confirms (the cluster
    # and Sentinel runs), a lock with `replicas` behaves as one without; the failover cases
    # are in test_failover.py.
    replicas = ReplicaWait(redis, 500)
    async with lock(redis, keys, "waited", ttl=5.0, replicas=replicas) as held:
        assert held.replication in {Replication.NO_REPLICA, Replication.CONFIRMED}
        with pytest.raises(LockNotAcquiredError, match="held elsewhere"):
            async with lock(redis, keys, "waited", timeout=0.05, replicas=replicas):
                pytest.fail("acquired a lock that is held")
    async with lock(redis, keys, "waited", ttl=5.0, replicas=ReplicaWait(redis, 0)) as off:
        assert off.replication is Replication.OFF
        assert off.fence == held.fence + 1
    async with lock(redis, keys, "waited", ttl=5.0) as plain:
        assert plain.replication is Replication.OFF
