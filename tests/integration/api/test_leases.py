"""Leases on real Redis and PostgreSQL: no stale set after an invalidation, no stampede."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import orjson
from redis.asyncio import Redis

from api.adapters.repository import UserRepository, public_document
from api.schemas import UserUpdate
from shared.cache import encode, unversioned
from shared.keys import Keys

from .conftest import ApiFactory, public


async def test_reader_holding_an_old_row_cannot_store_it_after_a_write(
    make_api: ApiFactory, redis: Redis
) -> None:
    async with make_api(near_cache_size=0, cache_invalidation="write") as api, api.sessions():
        user = await api.create_user("Old")
        headers = await api.sign_in(user)
        uid = uuid.UUID(user["id"])
        service = api.state.users
        loaded, release = asyncio.Event(), asyncio.Event()

        async def held_load() -> Any:
            document = await service.load_user(uid)
            loaded.set()
            await release.wait()  # the reader sits between its load and its store
            return document

        reader = asyncio.create_task(service.cache.user(uid, held_load))
        await asyncio.wait_for(loaded.wait(), 10)
        patched = await api.client.patch(f"/v1/users/{uid}", json={"name": "New"}, headers=headers)
        assert patched.status_code == 200
        release.set()
        found = await asyncio.wait_for(reader, 10)

        assert found.value["name"] == "Old"  # what it read is what it answered...
        assert found.stored is False  # ...but the lease was gone, so it was not stored
        cached = await redis.get(Keys(api.settings.key_prefix).user(uid))
        assert isinstance(cached, bytes)
        assert orjson.loads(unversioned(cached))["name"] == "New"  # the writer's value stays
        after = await api.client.get(f"/v1/users/{uid}")
        assert (after.headers["x-cache"], after.json()["name"]) == ("HIT", "New")


async def test_randomized_interleavings_leave_no_stale_value(
    make_api: ApiFactory, redis: Redis
) -> None:
    rng = random.Random(20261125)
    async with make_api(near_cache_size=0, cache_invalidation="write") as api:
        service = api.state.users
        uids = [uuid.UUID((await api.create_user(f"U{i}"))["id"]) for i in range(6)]
        operations = 0

        async def read(uid: uuid.UUID, hold: float) -> None:
            async def load() -> Any:
                document = await service.load_user(uid)
                # not a wait: widens the window between load and store
                await asyncio.sleep(hold)
                return document

            await service.cache.user(uid, load)

        async def write(uid: uuid.UUID, start: float) -> None:
            await asyncio.sleep(start)  # not a wait: a random start, the interleaving tested
            await service.update(uid, UserUpdate(name=f"n{rng.randrange(10**9)}"))

        keys = Keys(api.settings.key_prefix)
        while operations < 1000:
            # An eviction (TTL, maxmemory) before each batch: since writes store through, the
            # reads below would otherwise all be hits and no fill would race a write.
            for uid in uids:
                await redis.delete(keys.user(uid))
            batch = []
            for _ in range(25):
                uid = rng.choice(uids)
                if rng.random() < 0.3:
                    batch.append(write(uid, rng.uniform(0, 0.004)))
                else:
                    batch.append(read(uid, rng.uniform(0, 0.004)))
            await asyncio.gather(*batch)
            operations += len(batch)

        stale = 0
        async with service.db() as session:
            for uid in uids:
                row = await UserRepository(session).get(uid)
                assert row is not None
                cached = await redis.get(keys.user(uid))
                assert cached is None or isinstance(cached, bytes)
                if cached is not None and orjson.loads(unversioned(cached)) != orjson.loads(
                    encode(public_document(row))
                ):
                    stale += 1
        refused = api.state.metrics.cache.value("store", "refused")

    assert operations >= 1000
    assert stale == 0
    # The races really happened: some readers were refused by the lease script.
    assert refused > 0


async def test_stampede_of_200_gets_on_a_cold_key_loads_the_database_once(
    make_api: ApiFactory,
) -> None:
    # A generous lease wait: on a loaded 2-core machine 200 coroutines may keep the lease
    # holder waiting longer than the production default of a few milliseconds.
    async with make_api(near_cache_size=0, cache_lease_wait=3.0) as api:
        user = await api.create_user()
        before = api.sql.user_loads
        responses = await asyncio.gather(
            *(api.client.get(f"/v1/users/{user['id']}") for _ in range(200))
        )
        assert {r.status_code for r in responses} == {200}
        assert all(r.json() == public(user) for r in responses)
        assert api.sql.user_loads - before == 1
        assert sum(r.headers["x-cache"] == "MISS" for r in responses) == 1
