"""The near cache's purge subscription on a real cluster: one node's connection, another
node when that one dies, and a failover anywhere drops the near cache whole.

A private cluster per test (its nodes are killed), so this runs the same in every
`--redis-mode`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import RedisError

from devtools.polling import eventually
from devtools.redis_cluster import LocalCluster
from devtools.redis_server import RedisServer, find_redis_server
from devtools.settings import StackSettings
from shared.connections import open_redis
from shared.nearcache import NearCache, PurgeNotice, PurgeSubscriber

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


@asynccontextmanager
async def subscribed(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> AsyncIterator[tuple[RedisCluster, NearCache, PurgeSubscriber, str]]:
    settings = make_settings(redis_mode="cluster", redis_url=cluster.url)
    client = await open_redis(settings.redis_target, settings)
    assert isinstance(client, RedisCluster)
    near = NearCache(100, 60.0)
    channel = f"{settings.key_prefix}:cache:invalidated"
    subscriber = PurgeSubscriber(client, channel, near, poll=0.1)
    task = asyncio.create_task(subscriber.run())
    try:
        await eventually(lambda: near.live and subscriber.subscriptions >= 1, "subscribed")
        yield client, near, subscriber, channel
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def purge(client: RedisCluster, channel: str, key: str) -> None:
    """Publish a notice (to whichever node the client picks), retrying while a node is
    failing over."""
    notice = PurgeNotice(keys=[key], event_id=uuid.uuid4(), generation=1)

    async def publish() -> bool:
        await client.publish(channel, notice.encode())
        return True

    await eventually(publish, "the notice published", within=20, ignoring=(RedisError,))


def node_of(cluster: LocalCluster, subscriber: PurgeSubscriber) -> RedisServer:
    port = int(str(subscriber.node).rsplit(":", 1)[1])
    return next(node for node in cluster.nodes if node.port == port)


async def test_a_subscriber_moves_to_another_node_when_its_node_dies(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    async with subscribed(make_settings, cluster) as (client, near, subscriber, channel):
        near.put("k1", b"v", near.epoch)
        await purge(client, channel, "k1")
        await eventually(lambda: near.peek("k1") is None, "k1 purged")
        # Its node dies: another node is subscribed to, and the near cache, blind meanwhile,
        # is dropped whole.
        dead = node_of(cluster, subscriber)
        near.put("k2", b"v", near.epoch)
        cluster.kill(dead)
        await eventually(lambda: subscriber.subscriptions >= 2, "subscribed again", within=20)
        assert near.peek("k2") is None
        assert node_of(cluster, subscriber) is not dead
        near.put("k3", b"v", near.epoch)
        await purge(client, channel, "k3")
        await eventually(lambda: near.peek("k3") is None, "k3 purged", within=20)


async def test_a_failover_anywhere_drops_the_near_cache(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    async with subscribed(make_settings, cluster) as (client, near, subscriber, channel):
        subscriptions = subscriber.subscriptions
        other = next(p for p in cluster.primaries() if p is not node_of(cluster, subscriber))
        near.put("k", b"v", near.epoch)
        cluster.kill(other)
        cluster.wait_for_failover(other)
        # Notices published to the dead primary may be lost: the cluster's epoch moved, so
        # the near cache is dropped, without the subscription itself breaking.
        await eventually(lambda: near.peek("k") is None, "the near cache dropped", within=20)
        assert subscriber.subscriptions == subscriptions
        near.put("k2", b"v", near.epoch)
        await purge(client, channel, "k2")
        await eventually(lambda: near.peek("k2") is None, "k2 purged", within=20)
