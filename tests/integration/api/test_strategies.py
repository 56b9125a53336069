"""CACHE_INVALIDATION decides who purges after a write: the api, the invalidator, or nobody."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from shared.keys import Keys

from .conftest import ApiFactory


@pytest.mark.parametrize(
    ("strategy", "writer_purges"),
    [("write+event", True), ("write", True), ("event", False), ("ttl", False)],
)
async def test_who_purges_after_a_write(
    make_api: ApiFactory, redis: Redis, strategy: str, writer_purges: bool
) -> None:
    async with make_api(cache_invalidation=strategy, near_cache_size=0) as api, api.sessions():
        user = await api.create_user("Old")
        headers = await api.sign_in(user)
        path = f"/v1/users/{user['id']}"
        assert (await api.client.get(path)).headers["x-cache"] == "MISS"
        keys = Keys(api.settings.key_prefix)
        generation = await redis.get(keys.user_list_gen())
        patched = await api.client.patch(path, json={"name": "New"}, headers=headers)
        assert patched.status_code == 200
        after = await api.client.get(path)
        new_generation = await redis.get(keys.user_list_gen())

    if writer_purges:
        # The writer stored the new value (write-through): a hit, already new.
        assert (after.headers["x-cache"], after.json()["name"]) == ("HIT", "New")
        assert int(new_generation or 0) == int(generation or 0) + 1
    else:
        # Left to the invalidator (event) or to the TTL: the api does not touch the cache.
        assert (after.headers["x-cache"], after.json()["name"]) == ("HIT", "Old")
        assert new_generation == generation
