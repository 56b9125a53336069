"""The auto-pipeline of a Sentinel client follows a killed master to its promoted replica.

Its dedicated connection is made again after the master dies; that reconnect must ask the
sentinels where the master is now (`shared.redispy.connect_once`), or every cache GET and
rate-limit check of the api keeps dialing the dead address until the process restarts. The
Sentinel set is private: its master is killed (-9, by PID) here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devtools.polling import eventually
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import find_redis_server
from devtools.settings import StackSettings
from shared.autopipeline import AutoPipeline, auto_pipeline
from shared.connections import make_redis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]


@pytest.fixture
def sentinel_set() -> Iterator[LocalSentinel]:
    with LocalSentinel() as local:
        yield local


async def answer(pipeline: AutoPipeline, *command: str) -> object:
    """The command's reply, or None while it fails (the outage)."""
    try:
        return await pipeline.execute(*command)
    except RedisError:
        return None


async def test_a_killed_master_is_followed_to_the_promoted_replica(
    make_settings: Callable[..., StackSettings], sentinel_set: LocalSentinel, key_prefix: str
) -> None:
    sentinels = ",".join(f"{host}:{port}" for host, port in sentinel_set.addresses)
    settings = make_settings(redis_mode="sentinel", redis_url="redis://", redis_sentinels=sentinels)
    client = make_redis(settings.redis_target, settings)
    assert isinstance(client, Redis)
    pipeline = auto_pipeline(client)
    before, after = f"{key_prefix}:before", f"{key_prefix}:after"
    try:
        assert await pipeline.execute("SET", before, "1") == b"OK"
        assert await pipeline.execute("WAIT", 1, 2000) == 1  # the replica holds it
        old = sentinel_set.kill_primary()
        new = sentinel_set.wait_for_promotion(old)
        # Errors until the sentinels agree on the new master; then its answers.
        found = await eventually(lambda: answer(pipeline, "GET", before), "a GET answered")
        assert found == b"1"
        assert await pipeline.execute("SET", after, "2") == b"OK"
    finally:
        await client.aclose()
    async with Redis(port=new.port) as direct:  # the write went to the promoted server
        assert await direct.get(after) == b"2"
