"""A lock holder that lost its lock in a failover is refused by the fencing check.

Replication is asynchronous: a fence `INCR`ed on a primary that dies before its replica has
it is handed out again by the replica promoted in its place, and then the storage cannot tell
the old holder from the new one. With a `ReplicaWait`, a fence counts only once a replica
holds it, so the promoted replica hands the next holder a higher one:

- after `kill -9` of the primary (Sentinel; cluster: the primary of the lock's slot), the new
  holder's fence is higher and the old holder's fenced write is refused;
- the control: without the wait, a replica held back at the moment of the crash makes the
  promoted replica hand out the *same* fence again, and the old holder's write is accepted;
- with the wait, the same held-back replica means no lock: the `WAIT` times out, the attempt
  is released and retried, and `LockNotAcquiredError` says why.

A replica is held back deterministically: stopped by PID (SIGSTOP: it answers nothing, so no
`WAIT` is confirmed), and, for the control, with enough written to it that the primary
process itself holds the newest bytes of the replication stream (Redis 7's
`mem_total_replication_buffers` above its backlog): a `kill -9` of the primary loses those —
bytes already in the kernel's socket buffers would still be delivered.

The topologies are private (a primary dies here), so these tests run the same whatever
`--redis-mode` the run has.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from functools import partial

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devtools.polling import eventually
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import find_redis_server
from devtools.settings import StackSettings
from shared.connections import RedisClient, make_redis
from shared.errors import LockNotAcquiredError
from shared.keys import Keys
from shared.lock import FencedStore, Held, lock
from shared.replication import Replication, ReplicaWait
from tests.integration.test_replication import paused

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.slow,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]

RESOURCE = "report"
WAIT_MS = 500  # under REDIS_READ_TIMEOUT (3 s), far above a healthy replica's lag here
SHORT_WAIT_MS = 200  # a stalled replica costs each attempt this long
EARLIER_HOLDERS = 3  # the fence is past 1 when the holder under test takes it
JUNK = b"x" * (1 << 20)
MAX_JUNK = 64  # MB; a few are enough on loopback, where the kernel buffers hold ~4-6 MB
# A primary unreachable while failing over: its clients fail until they find the new one.
FAILING_OVER = (RedisConnectionError, RedisTimeoutError, ClusterDownError, RedisClusterException)


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def sentinel_set() -> Iterator[LocalSentinel]:
    with LocalSentinel() as local:
        yield local


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


def sentinel_client(
    make_settings: Callable[..., StackSettings], local: LocalSentinel
) -> RedisClient:
    sentinels = ",".join(f"{host}:{port}" for host, port in local.addresses)
    settings = make_settings(redis_mode="sentinel", redis_url="redis://", redis_sentinels=sentinels)
    return make_redis(settings.redis_target, settings)


def cluster_client(
    make_settings: Callable[..., StackSettings], local: LocalCluster
) -> RedisCluster:
    """A cluster client seeded with a node that is running (the first may have been killed)."""
    seed = next(node for node in local.nodes if node.running)
    settings = make_settings(redis_mode="cluster", redis_url=seed.url)
    client = make_redis(settings.redis_target, settings)
    assert isinstance(client, RedisCluster)
    return client


async def take_after_others(client: RedisClient, keys: Keys, replicas: ReplicaWait) -> Held:
    """The lock, held (not renewed: its holder is about to be cut off) after a few earlier
    holders took and released it, every one confirmed by the replica."""
    for _ in range(EARLIER_HOLDERS):
        async with lock(client, keys, RESOURCE, ttl=5.0, replicas=replicas) as earlier:
            assert earlier.replication is Replication.CONFIRMED
    held = await lock(client, keys, RESOURCE, ttl=3.0, timeout=5.0, replicas=replicas).acquire()
    assert held.fence > EARLIER_HOLDERS
    assert held.replication is Replication.CONFIRMED
    return held


async def refused_after_failover(store: FencedStore, held: Held) -> None:
    """The old holder, unaware of the failover, writes as if it still held the lock."""
    stale = await eventually(
        partial(store.set, "latest", "from the old holder", held.fence),
        "the old holder's client reaching the promoted primary",
        ignoring=FAILING_OVER,
    )
    assert not stale.written


async def hold_back(primary: Redis, junk_prefix: str) -> Callable[[], Awaitable[bool]]:
    """Write to `primary`, whose replica is stopped, until the primary process holds bytes
    of the replication stream it cannot send; returns the check that it still does.

    Everything written from then on is among those bytes: a `kill -9` loses it."""
    memory = await primary.info("memory")
    if "mem_total_replication_buffers" not in memory:
        pytest.skip("needs Redis 7 (mem_total_replication_buffers) to see held-back bytes")
    backlog = int(str((await primary.config_get("repl-backlog-size"))["repl-backlog-size"]))

    async def holding() -> bool:
        # Beyond the backlog's own share: a replica's unsent bytes keep buffers alive.
        memory = await primary.info("memory")
        return int(memory["mem_total_replication_buffers"]) > 2 * backlog

    for n in range(MAX_JUNK):  # not polling: writes until the socket buffers are full
        if await holding():
            return holding
        await primary.set(f"{junk_prefix}:junk:{n}", JUNK)
    pytest.fail(f"{MAX_JUNK} MB written and the primary still sent everything")


async def test_a_sentinel_failover_refuses_the_holder_that_lost_the_lock(
    make_settings: Callable[..., StackSettings], sentinel_set: LocalSentinel, keys: Keys
) -> None:
    a_client = sentinel_client(make_settings, sentinel_set)
    try:
        a = await take_after_others(a_client, keys, ReplicaWait(a_client, WAIT_MS))
        store_a = FencedStore(a_client, keys, RESOURCE)
        assert (await store_a.set("latest", "from A", a.fence)).written
        old = sentinel_set.kill_primary()  # the moment A's fence was confirmed
        sentinel_set.wait_for_promotion(old)
        b_client = sentinel_client(make_settings, sentinel_set)  # another process's client
        try:
            replicas = ReplicaWait(b_client, WAIT_MS)
            # Waits out A's lease: it was confirmed, so the promoted replica holds it too.
            b = await lock(b_client, keys, RESOURCE, timeout=10.0, replicas=replicas).acquire()
            assert b.fence > a.fence
            # The promoted primary has no replica yet (its old primary is dead): degraded.
            assert b.replication is Replication.NO_REPLICA
            store_b = FencedStore(b_client, keys, RESOURCE)
            assert (await store_b.set("latest", "from B", b.fence)).written
        finally:
            await b_client.aclose()
        await refused_after_failover(store_a, a)
        assert await store_a.get("latest") == b"from B"
        assert await store_a.highest() == b.fence
    finally:
        await a_client.aclose()


async def test_a_cluster_failover_refuses_the_holder_that_lost_the_lock(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster, keys: Keys
) -> None:
    a_client = cluster_client(make_settings, cluster)
    try:
        a = await take_after_others(a_client, keys, ReplicaWait(a_client, WAIT_MS))
        store_a = FencedStore(a_client, keys, RESOURCE)
        assert (await store_a.set("latest", "from A", a.fence)).written
        victim = cluster.primary_for(keys.lock(RESOURCE))  # the primary serving the lock's slot
        cluster.kill(victim)
        promoted = cluster.wait_for_failover(victim)
        assert promoted.port != victim.port
        b_client = cluster_client(make_settings, cluster)
        try:
            replicas = ReplicaWait(b_client, WAIT_MS)
            b = await lock(b_client, keys, RESOURCE, timeout=10.0, replicas=replicas).acquire()
            assert b.fence > a.fence
            assert b.replication is Replication.NO_REPLICA  # the promoted node has none yet
            store_b = FencedStore(b_client, keys, RESOURCE)
            assert (await store_b.set("latest", "from B", b.fence)).written
        finally:
            await b_client.aclose()
        await refused_after_failover(store_a, a)
        assert await store_a.get("latest") == b"from B"
    finally:
        await a_client.aclose()


async def test_without_the_wait_a_failover_hands_out_the_same_fence_twice(
    sentinel_set: LocalSentinel, keys: Keys
) -> None:
    # The control for the tests above: what they guard against happens.
    fence_key = keys.lock_fence(RESOURCE)
    async with Redis(port=sentinel_set.master().port) as a_client:
        for _ in range(EARLIER_HOLDERS):
            async with lock(a_client, keys, RESOURCE, ttl=5.0):
                pass
        async with Redis(port=sentinel_set.replica.port) as on_replica:

            async def replicated() -> bool:
                return await on_replica.get(fence_key) == str(EARLIER_HOLDERS).encode()

            await eventually(replicated, "the earlier fences on the replica")
        with paused(sentinel_set.replica):
            holding = await hold_back(a_client, keys.lock(RESOURCE))
            a = await lock(a_client, keys, RESOURCE, ttl=30.0, timeout=0).acquire()
            assert a.fence == EARLIER_HOLDERS + 1
            assert (await FencedStore(a_client, keys, RESOURCE).set("v", "A", a.fence)).written
            assert await holding()  # A's fence and write are among the bytes not sent
            old = sentinel_set.kill_primary()
        # The replica resumes: it reads what reached its socket, then finds its primary gone.
    new = sentinel_set.wait_for_promotion(old)
    async with Redis(port=new.port) as b_client:
        b = await lock(b_client, keys, RESOURCE, ttl=5.0, timeout=0).acquire()
        assert b.fence == a.fence  # the same fence, handed out twice
        store = FencedStore(b_client, keys, RESOURCE)
        assert (await store.set("v", "B", b.fence)).written
        # A, which never learnt of the failover, writes with the same fence: accepted.
        assert (await store.set("v", "A, stale", a.fence)).written
        assert await store.get("v") == b"A, stale"


def _attempts(refused: LockNotAcquiredError) -> tuple[int, int]:
    found = re.search(r"\((\d+) of (\d+) attempts", str(refused))
    assert found is not None, str(refused)
    return int(found[1]), int(found[2])


async def test_with_the_wait_a_stalled_replica_means_no_lock(
    sentinel_set: LocalSentinel, keys: Keys
) -> None:
    lock_key, fence_key = keys.lock(RESOURCE), keys.lock_fence(RESOURCE)
    primary, replica = sentinel_set.master(), sentinel_set.replica
    async with Redis(port=primary.port) as client, Redis(port=replica.port) as on_replica:
        replicas = ReplicaWait(client, SHORT_WAIT_MS)
        async with lock(client, keys, RESOURCE, ttl=5.0, replicas=replicas) as first:
            assert first.replication is Replication.CONFIRMED
        with paused(replica):
            with pytest.raises(LockNotAcquiredError, match="no replica confirmed") as refused:
                await lock(client, keys, RESOURCE, timeout=1.0, replicas=replicas).acquire()
            unconfirmed, attempts = _attempts(refused.value)
            # Every attempt took the lock and a fence, was not confirmed, and was released:
            # the retries after the first time-out were waited for too (none was granted).
            assert unconfirmed == attempts >= 2
            assert await client.get(lock_key) is None
            assert int(await client.get(fence_key) or 0) == first.fence + attempts
            # The same stall without the wait: granted at once, with a fence only the primary
            # holds (the test above shows what a failover makes of that).
            async with lock(client, keys, RESOURCE, ttl=5.0, timeout=0) as unwaited:
                assert unwaited.replication is Replication.OFF
        # Resumed: an acquisition counts again once confirmed, and the replica has its fence.
        async with lock(client, keys, RESOURCE, timeout=5.0, replicas=replicas) as held:
            assert held.replication is Replication.CONFIRMED
            assert int(await on_replica.get(fence_key) or 0) == held.fence


async def test_with_the_wait_a_stalled_cluster_replica_stops_its_primarys_locks_only(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster, keys: Keys
) -> None:
    primary = cluster.primary_for(keys.lock(RESOURCE))
    other = next(  # a resource whose lock another primary serves
        f"other-{n}" for n in range(1000) if cluster.primary_for(keys.lock(f"other-{n}")) != primary
    )
    client = cluster_client(make_settings, cluster)
    try:
        replicas = ReplicaWait(client, SHORT_WAIT_MS)
        with paused(cluster.replica_of(primary)):  # shorter than the cluster's node timeout
            with pytest.raises(LockNotAcquiredError, match="no replica confirmed") as refused:
                await lock(client, keys, RESOURCE, timeout=0.8, replicas=replicas).acquire()
            unconfirmed, attempts = _attempts(refused.value)
            assert unconfirmed == attempts >= 2
            async with lock(client, keys, other, ttl=5.0, replicas=replicas) as elsewhere:
                assert elsewhere.replication is Replication.CONFIRMED
        async with lock(client, keys, RESOURCE, timeout=5.0, replicas=replicas) as held:
            assert held.replication is Replication.CONFIRMED
    finally:
        await client.aclose()
