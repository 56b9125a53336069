"""The invalidator's drain on a real local Redis Cluster: reads routed without asking the
server, purges batched per primary, redirects and lost links, the announce after the purges.

The cluster is private to this module (slots are moved and primaries paused here), so these
tests run the same whatever `--redis-mode` the run has.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from devtools import slot_migration
from devtools.redis_cluster import LocalCluster, open_cluster
from devtools.redis_server import RedisServer, find_redis_server
from devtools.settings import StackSettings
from invalidator.usecases import Purger
from shared.autopipeline import auto_pipeline
from shared.events import UserEvent, UserUpdated, UserUpdatedPayload
from shared.keys import Keys
from shared.streams import ConsumerConfig, Delivery, StreamConsumer

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]

GETKEYS = "cmdstat_command|getkeys"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster(replicas=0)
    try:  # not `with`: a start that times out must still kill what it started
        yield local.start()
    finally:
        local.stop()


@pytest.fixture
async def client(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> AsyncIterator[RedisCluster]:
    client = await open_cluster(make_settings, cluster)
    yield client
    await client.aclose()


async def getkeys_calls(client: RedisCluster) -> int:
    """`COMMAND GETKEYS` calls so far, over every node."""
    stats: dict[str, Any] = await client.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
    return sum(int(node.get(GETKEYS, {}).get("calls", 0)) for node in stats.values())


def users_per_primary(
    local: LocalCluster, keys: Keys, count: int, *, avoid: RedisServer | None = None
) -> dict[int, list[uuid.UUID]]:
    """`count` users whose keys each primary serves (but `avoid`), by the primary's port."""
    found: dict[int, list[uuid.UUID]] = {
        p.port: [] for p in local.primaries() if avoid is None or p.port != avoid.port
    }
    while any(len(users) < count for users in found.values()):
        uid = uuid.uuid4()
        users = found.get(local.primary_for(keys.user(uid)).port)
        if users is not None and len(users) < count:
            users.append(uid)
    return found


def updated(uids: list[uuid.UUID]) -> list[Delivery]:
    events: list[UserEvent] = [
        UserUpdated(source="test", payload=UserUpdatedPayload(user_id=uid)) for uid in uids
    ]
    return [Delivery(f"{n}-0", event, {}, 1) for n, event in enumerate(events, start=1)]


async def cache(client: RedisCluster, keys: Keys, uids: list[uuid.UUID]) -> None:
    for uid in uids:
        await client.set(keys.user(uid), b'{"id": "x"}')
        await client.set(keys.user_lease(uid), b"token")


async def cached(client: RedisCluster, keys: Keys, uids: list[uuid.UUID]) -> int:
    """How many of the users' values and leases are still there (one key at a time: a
    multi-key EXISTS mid-migration meets TRYAGAIN)."""
    counts = [await client.exists(key) for u in uids for key in (keys.user(u), keys.user_lease(u))]
    return sum(counts)


async def test_stream_reads_ask_the_server_for_no_keys(
    client: RedisCluster, cluster: LocalCluster, make_settings: Callable[..., StackSettings]
) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:6]}")
    stream = keys.user_events()
    for uid in (uuid.uuid4() for _ in range(3)):
        event = UserUpdated(source="test", payload=UserUpdatedPayload(user_id=uid))
        await client.xadd(stream, {"data": event.to_json()})
    config = ConsumerConfig.from_settings(
        make_settings(), stream=stream, group="g", consumer="c", dead_letters=keys.dead_letters()
    )
    seen: list[Delivery] = []

    async def handler(batch: Any) -> dict[str, BaseException]:
        seen.extend(batch)
        return {}

    consumer = StreamConsumer(client, config, handler)
    await consumer.prepare()
    before = await getkeys_calls(client)
    assert await consumer.read_new() == 3
    assert await client.xread({stream: "0"}, count=10) != []
    assert await getkeys_calls(client) == before  # each read was one round trip
    assert len(seen) == 3
    assert await client.xpending(stream, "g") == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }  # fmt: skip
    # The mechanism: redis-py's own cluster client asks the server where the keys are.
    plain = RedisCluster.from_url(cluster.url)
    try:
        _ = await plain.initialize()  # else its first command goes to any node, unrouted
        _ = await plain.xread({stream: "0"}, count=1)
        assert await getkeys_calls(client) > before, "redis-py routes XREAD itself now"
    finally:
        await plain.aclose()


async def test_a_batch_is_purged_with_one_write_per_primary_then_announced(
    client: RedisCluster, cluster: LocalCluster
) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:6]}")
    by_primary = users_per_primary(cluster, keys, count=5)
    uids = [uid for users in by_primary.values() for uid in users]
    await cache(client, keys, uids)
    pipeline = auto_pipeline(client)
    _ = await pipeline.execute("GET", keys.user_list_gen())  # one link made before
    batches, commands = pipeline.batches, pipeline.commands
    assert await Purger(client, keys)(updated(uids)) == {}
    assert await cached(client, keys, uids) == 0
    assert await client.get(keys.user_list_gen()) == b"1"  # one bump for the batch
    # Three primaries, one write each, and the announce after them.
    assert (pipeline.batches - batches, pipeline.commands - commands) == (4, len(uids) + 1)
    assert pipeline.links == {f"127.0.0.1:{port}": True for port in by_primary}
    assert (pipeline.fallbacks, pipeline.redirects) == (0, 0)


async def test_purges_follow_moved_and_ask_after_a_real_slot_migration(
    client: RedisCluster, cluster: LocalCluster
) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:6]}")
    by_primary = users_per_primary(cluster, keys, count=2)
    uids = [uid for users in by_primary.values() for uid in users]
    moving = uids[0]
    slot = key_slot(keys.user(moving).encode())
    source = cluster.primary_for(keys.user(moving))
    target = next(p for p in cluster.primaries() if p.port != source.port)
    primaries = cluster.primaries()
    purger = Purger(client, keys)
    pipeline = auto_pipeline(client)
    await cache(client, keys, uids)
    assert await Purger(client, keys)(updated(uids)) == {}  # the links and the map in use
    await slot_migration.begin(slot, source, target)
    finished = False
    try:
        # ASK: the source let the keys go; those purges go through the cluster client.
        await cache(client, keys, uids)
        fallbacks = pipeline.fallbacks
        assert await purger(updated(uids)) == {}
        assert await cached(client, keys, uids) == 0
        assert pipeline.fallbacks > fallbacks
        await cache(client, keys, uids)  # on the target (ASK), before redis-py sees a MOVED
        await slot_migration.finish(slot, target, primaries)
        finished = True
        # MOVED: the client's map is patched and the purge is sent to the new owner's link.
        fallbacks, redirects = pipeline.fallbacks, pipeline.redirects
        assert await purger(updated(uids)) == {}
        assert await cached(client, keys, uids) == 0
        assert (pipeline.fallbacks, pipeline.redirects) == (fallbacks, redirects + 1)
        assert client.nodes_manager.slots_cache[slot][0].port == target.port
        # Straight to the new owner from now on.
        await cache(client, keys, uids)
        assert await purger(updated(uids)) == {}
        assert await cached(client, keys, uids) == 0
        assert (pipeline.fallbacks, pipeline.redirects) == (fallbacks, redirects + 1)
    finally:  # give the slot back, for the other tests
        await slot_migration.give_back(slot, source, target, primaries, finished=finished)


async def test_a_primary_that_stops_answering_is_purged_through_the_cluster_client(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    client = await open_cluster(make_settings, cluster, redis_read_timeout="0.3s")
    try:
        keys = Keys(f"t{uuid.uuid4().hex[:6]}")
        by_primary = users_per_primary(cluster, keys, count=3)
        uids = [uid for users in by_primary.values() for uid in users]
        purger = Purger(client, keys)
        pipeline = auto_pipeline(client)
        await cache(client, keys, uids)
        assert await purger(updated(uids)) == {}  # every link open
        await cache(client, keys, uids)
        announcer = cluster.primary_for(keys.user_list_gen()).port
        paused = next(port for port in by_primary if port != announcer)  # no announce there
        # The link's batch times out (the link is closed); each of its commands is sent
        # again through the cluster client, answered once the pause is over.
        await slot_migration.call(paused, "CLIENT", "PAUSE", 400, "ALL")
        fallbacks = pipeline.fallbacks
        assert await purger(updated(uids)) == {}
        assert await cached(client, keys, uids) == 0
        assert pipeline.fallbacks - fallbacks == len(by_primary[paused])
        assert pipeline.links[f"127.0.0.1:{paused}"] is False
        await cache(client, keys, uids)
        assert await purger(updated(uids)) == {}  # the link opens again
        assert pipeline.links[f"127.0.0.1:{paused}"] is True
        assert await cached(client, keys, uids) == 0
    finally:
        await client.aclose()


async def test_no_notice_is_published_before_every_purge_it_announces_is_done(
    client: RedisCluster, cluster: LocalCluster
) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:6]}")
    announcer = cluster.primary_for(keys.user_list_gen())
    # Users on the primaries that do not run the announce: a slow purge there must hold it.
    by_primary = users_per_primary(cluster, keys, count=2, avoid=announcer)
    uids = [uid for users in by_primary.values() for uid in users]
    slow = next(iter(by_primary))
    await cache(client, keys, uids)
    purger = Purger(client, keys)
    assert await purger(updated(uids)) == {}  # the links in use
    await cache(client, keys, uids)
    observer = Redis(port=announcer.port)
    pubsub = observer.pubsub()
    await pubsub.subscribe(keys.cache_invalidated())
    try:
        # Writes (the purges) wait on one primary; reads (EXISTS below) are served.
        await slot_migration.call(slow, "CLIENT", "PAUSE", 500, "WRITE")
        started = time.monotonic()
        purge = asyncio.ensure_future(purger(updated(uids)))
        still_cached: list[int] = []
        while len(still_cached) < len(uids) and time.monotonic() - started < 5:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is None:
                continue
            notice = orjson.loads(message["data"])
            # Each key a notice names is gone by the time the notice is out.
            user_keys = notice["keys"]
            assert user_keys
            still_cached.append(await client.exists(*user_keys))
        assert await purge == {}
        assert time.monotonic() - started >= 0.25  # the pause held the batch up
        assert still_cached == [0] * len(uids)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await observer.aclose()
