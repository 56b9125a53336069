"""Warm-up at start: hot users are in Redis before anyone asks; one instance warms at a time."""

from __future__ import annotations

from redis.asyncio import Redis

from api.warmup import LOCK_RESOURCE
from devtools.polling import eventually
from shared.keys import Keys
from shared.lock import lock

from .conftest import ApiFactory


async def test_hot_users_are_cached_at_start(make_api: ApiFactory, redis: Redis) -> None:
    async with make_api(near_cache_size=0) as seeding:
        users = [await seeding.create_user(f"U{i}") for i in range(4)]
    keys = Keys(seeding.settings.key_prefix)
    named, recent = users[0]["id"], [u["id"] for u in users[2:]]
    async with make_api(near_cache_size=0, cache_warmup_ids=named, cache_warmup_recent=2) as api:
        warmed = [keys.user(u) for u in [named, *recent]]
        await eventually(lambda: _all_cached(redis, warmed), "the named and recent users cached")
        assert await redis.get(keys.user(users[1]["id"])) is None  # neither named nor recent
        for user_id in [named, *recent]:
            response = await api.client.get(f"/v1/users/{user_id}")
            assert response.headers["x-cache"] == "HIT"


async def _all_cached(redis: Redis, names: list[str]) -> bool:
    return bool(await redis.exists(*names) == len(names))


async def test_an_instance_skips_warm_up_while_another_holds_the_lock(
    make_api: ApiFactory, redis: Redis
) -> None:
    async with make_api(near_cache_size=0) as seeding:
        user = await seeding.create_user()
    keys = Keys(seeding.settings.key_prefix)
    async with (
        lock(redis, keys, LOCK_RESOURCE, ttl=10.0, timeout=0.0),
        make_api(near_cache_size=0, cache_warmup_recent=5) as api,
    ):
        await eventually(
            lambda: "cache-warm-up" not in api.state.tasks.names(), "the warm-up task ended"
        )
        assert await redis.get(keys.user(user["id"])) is None
