"""The api's near cache on real Redis: purges drop entries, a lost subscription clears all."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster

from devtools.polling import eventually
from shared.connections import RedisClient
from shared.keys import Keys
from shared.nearcache import PurgeNotice

from .conftest import Api, ApiFactory, public


async def _warm_near(api: Api, user_id: str) -> str:
    """GET until the near cache holds the user; its key."""
    key = Keys(api.settings.key_prefix).user(user_id)
    near = api.state.near
    await eventually(lambda: near.live, "the near cache is subscribed")
    for _ in range(2):
        assert (await api.client.get(f"/v1/users/{user_id}")).status_code == 200
    assert near.get(key) is not None
    return key


async def test_near_cache_answers_without_redis_round_trips(make_api: ApiFactory) -> None:
    async with make_api(near_cache_ttl="30s") as api:
        user = await api.create_user()
        await _warm_near(api, user["id"])
        gets = api.state.metrics.cache.value("get", "hit")
        for _ in range(10):
            response = await api.client.get(f"/v1/users/{user['id']}")
            assert (response.headers["x-cache"], response.json()) == ("HIT", public(user))
        assert api.state.metrics.cache.value("get", "hit") == gets  # Redis not asked


async def test_purge_on_the_channel_drops_the_entry(make_api: ApiFactory, redis: Redis) -> None:
    async with make_api(near_cache_ttl="30s") as api:
        user = await api.create_user()
        key = await _warm_near(api, user["id"])
        near = api.state.near
        # As the invalidator (or another api instance) purges: the keys, then the notice.
        await redis.delete(key)
        message = PurgeNotice(keys=[key], event_id=uuid.UUID(int=0), generation=7).encode()
        await redis.publish(Keys(api.settings.key_prefix).cache_invalidated(), message)
        await eventually(lambda: near.peek(key) is None, "the entry purged", within=5)
        await eventually(lambda: near.refreshing(key) is None, "its read-back done", within=5)
        assert near.peek(key) is None  # Redis had nothing to read back


async def test_another_instance_holds_a_write_before_anyone_reads_it(
    make_api: ApiFactory,
) -> None:
    # Refresh-ahead: api B held the user; a PATCH through api A stores the new value in
    # Redis and announces the purge; B drops its copy and reads the new one back at once.
    async with (
        make_api(near_cache_ttl="30s") as a,
        make_api(near_cache_ttl="30s") as b,
        a.sessions(),
    ):
        user = await a.create_user("Before")
        key = await _warm_near(b, user["id"])
        reads = b.state.metrics.cache.value("get", "hit") + b.state.metrics.cache.value(
            "get", "miss"
        )
        patched = await a.client.patch(
            f"/v1/users/{user['id']}", json={"name": "After"}, headers=await a.sign_in(user)
        )
        assert patched.status_code == 200

        def holds_the_new_name() -> bool:
            data = b.state.near.peek(key)
            return data is not None and orjson.loads(data)["name"] == "After"

        await eventually(holds_the_new_name, "B's near cache holds the new name", within=5)
        # Nobody read the user on B: the read-back is not counted as a lookup.
        after = b.state.metrics.cache.value("get", "hit") + b.state.metrics.cache.value(
            "get", "miss"
        )
        assert after == reads
        response = await b.client.get(f"/v1/users/{user['id']}")
        assert (response.json()["name"], response.headers["x-cache"]) == ("After", "HIT")


async def _kill_subscribers(redis: RedisClient) -> int:
    """CLIENT KILL TYPE pubsub on every node: on a cluster the subscriber is on one of them
    (the channel's), and redis-py sends a CLIENT command to a random node unless told."""
    if isinstance(redis, RedisCluster):
        found: Any = await redis.client_kill_filter(
            _type="pubsub", target_nodes=RedisCluster.ALL_NODES
        )
        return sum(found.values()) if isinstance(found, dict) else int(found)
    return int(await redis.client_kill_filter(_type="pubsub"))


async def test_killing_the_subscription_clears_the_near_cache(
    make_api: ApiFactory, redis: RedisClient
) -> None:
    async with make_api(near_cache_ttl="30s") as api:
        users = [await api.create_user(f"U{i}") for i in range(3)]
        for user in users:
            await _warm_near(api, user["id"])
        near = api.state.near
        subscriber = api.state.purges
        assert subscriber is not None
        assert len(near) == 3
        subscriptions = subscriber.subscriptions
        assert await _kill_subscribers(redis) >= 1
        # Resubscribed (redis-py reconnects) and, on the new subscription, cleared everything.
        await eventually(
            lambda: subscriber.subscriptions > subscriptions, "subscribed again", within=10
        )
        assert len(near) == 0
        assert near.live


async def test_near_cache_off_when_size_is_zero(make_api: ApiFactory) -> None:
    async with make_api(near_cache_size=0) as api:
        user = await api.create_user()
        for _ in range(3):
            await api.client.get(f"/v1/users/{user['id']}")
        assert len(api.state.near) == 0
        assert not api.state.near.enabled
