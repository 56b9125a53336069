"""The generic cache (`shared.cache`) on a real Redis: TTLs, size limit, leases, metrics."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from devtools.redis_server import RedisServer
from shared.breaker import CircuitBreaker
from shared.cache import Cache, CacheMetrics, CacheUnavailableError
from shared.connections import UNAVAILABLE_ERRORS
from shared.errors import ValueTooLargeError
from shared.keys import Keys


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def cache(redis: Redis) -> Cache:
    return Cache(redis, max_value_bytes=1024, metrics=CacheMetrics(CollectorRegistry()))


async def test_set_get_exists_delete_with_a_ttl(cache: Cache, redis: Redis, keys: Keys) -> None:
    key = keys.user("2b1d6f0e-59d4-4a4c-9d7b-9b8f5c1d2e3f")
    await cache.set(key, {"name": "Ada", "n": [1, 2]}, ttl=30)
    assert await cache.get(key) == {"name": "Ada", "n": [1, 2]}
    assert await cache.exists(key)
    assert 0 < await redis.pttl(key) <= 30_000
    assert await cache.delete(key) == 1
    assert await cache.get(key, "absent") == "absent"
    assert not await cache.exists(key)


async def test_ttl_is_mandatory_and_positive(cache: Cache, keys: Keys) -> None:
    with pytest.raises(ValueError, match="positive"):
        await cache.set(keys.user_list_gen(), 1, ttl=0)


async def test_values_over_the_limit_are_refused(cache: Cache, redis: Redis, keys: Keys) -> None:
    key = keys.user_list_page(1, 1, 10)
    with pytest.raises(ValueTooLargeError) as refused:
        await cache.set(key, "x" * 2000, ttl=10)
    assert (refused.value.limit, refused.value.key) == (1024, key)
    assert await redis.exists(key) == 0


async def test_metrics_count_hits_misses_and_latency(cache: Cache, keys: Keys) -> None:
    key = keys.user_list_page(1, 1, 5)
    await cache.get(key)
    await cache.set(key, [1], ttl=10)
    await cache.get(key)
    assert cache.metrics.value("get", "hit") == 1
    assert cache.metrics.value("get", "miss") == 1
    assert cache.metrics.latency_sum("get") > 0


async def test_get_or_set_loads_once_and_caches_none_briefly(
    cache: Cache, redis: Redis, keys: Keys
) -> None:
    uid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    loads = 0

    async def loader() -> None:
        nonlocal loads
        loads += 1

    first = await cache.get_or_set(
        keys.user(uid), loader, 60, lease_key=keys.user_lease(uid), none_ttl=1.0
    )
    second = await cache.get_or_set(
        keys.user(uid), loader, 60, lease_key=keys.user_lease(uid), none_ttl=1.0
    )
    assert (first.hit, first.stored, second.hit, second.data) == (False, True, True, b"null")
    assert loads == 1
    assert 0 < await redis.pttl(keys.user(uid)) <= 1000
    # The lease outlives the store until its TTL: a late reader cannot win a second load.
    assert 0 < await redis.pttl(keys.user_lease(uid)) <= 2000


async def test_a_failed_loader_releases_its_lease(cache: Cache, redis: Redis, keys: Keys) -> None:
    uid = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

    async def broken() -> None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        await cache.get_or_set(keys.user(uid), broken, 60, lease_key=keys.user_lease(uid))
    assert await redis.exists(keys.user_lease(uid)) == 0


async def test_invalidate_deletes_value_and_lease_bumps_and_publishes(
    cache: Cache, redis: Redis, keys: Keys
) -> None:
    uid = "9b2e4c1a-0d3f-4b5e-8a7c-6d5e4f3a2b1c"
    await redis.set(keys.user(uid), b"{}")
    await redis.set(keys.user_lease(uid), b"token")
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.cache_invalidated())
    generation = await cache.invalidate(
        [keys.user(uid), keys.user_lease(uid)],
        generation_key=keys.user_list_gen(),
        channel=keys.cache_invalidated(),
        event_id=uuid.UUID(int=1),
    )
    assert generation == 1
    assert await redis.exists(keys.user(uid), keys.user_lease(uid)) == 0
    messages = []
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            messages.append(message)
            break
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    assert messages
    assert b'"generation":1' in messages[0]["data"]


async def test_breaker_opens_and_short_circuits(
    redis_server_factory: Callable[..., RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    client = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    breaker = CircuitBreaker(
        "t", failure_threshold=2, reset_timeout=60, failures=UNAVAILABLE_ERRORS
    )
    cache = Cache(client, breaker=breaker, metrics=CacheMetrics(CollectorRegistry()))
    server.kill()
    for _ in range(5):
        with pytest.raises(CacheUnavailableError):
            await cache.get(keys.user_list_gen())
    assert cache.metrics.value("get", "error") == 2
    assert cache.metrics.value("get", "short_circuit") == 3
    await client.aclose()


async def test_versions_only_ever_move_forward(cache: Cache, redis: Redis, keys: Keys) -> None:
    uid = str(uuid.uuid4())
    key, lease = keys.user(uid), keys.user_lease(uid)

    async def load_v1() -> dict[str, int]:
        # A reader loads v1; meanwhile the writer stores v2 (its write-through).
        assert await cache.put_if_newer(key, lease, b'{"v": 2}', 2, ttl=30)
        return {"v": 1}

    found = await cache.get_or_set(
        key, load_v1, ttl=30, lease_key=lease, version_of=lambda d: d["v"]
    )
    assert found.value == {"v": 1}  # what the reader loaded is what it answered...
    assert found.stored is False  # ...but it never went over the newer value
    assert await cache.get(key) == {"v": 2}  # readers see the data, not the version
    assert not await cache.put_if_newer(key, lease, b'{"v": 1}', 1, ttl=30)  # older: refused
    assert not await cache.put_if_newer(key, lease, b'{"v": 2}', 2, ttl=30)  # same: refused
    assert await cache.put_if_newer(key, lease, b'{"v": 3}', 3, ttl=30)
    assert await cache.get(key) == {"v": 3}
    assert 0 < await redis.pttl(key) <= 30_000
    # The write-through deleted the lease: a reader holding one from before cannot store.
    await redis.set(lease, b"old-token")
    assert await cache.put_if_newer(key, lease, b'{"v": 4}', 4, ttl=30)
    assert await redis.exists(lease) == 0
