"""The consumer rides out a Redis outage by itself: retries with backoff, recreates its group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devtools.polling import eventually
from devtools.redis_server import RedisServer
from devtools.settings import StackSettings
from shared.connections import make_redis
from shared.keys import Keys
from shared.streams import ConsumerConfig, Delivery, StreamConsumer
from tests.integration.streams.support import (
    UserEventModel,
    publish,
    user_event,
)


# redis-py drops the sockets the killed server broke without closing them; the
# ResourceWarning that gc then raises is redis-py's, and -W error would turn it into an
# exception at whatever await happens to run the collection.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_consumer_resumes_after_the_server_is_killed_and_restarted(
    make_settings: Callable[..., StackSettings],
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_server_factory()
    settings = make_settings(redis_url=server.url, stream_block="100ms", redis_max_retries=0)
    keys = Keys(settings.key_prefix)
    handled: list[str] = []

    async def record(batch: Sequence[Delivery]) -> Mapping[str, BaseException]:
        handled.extend(str(d.event.id) for d in batch)
        return {}

    config = ConsumerConfig.from_settings(
        settings,
        stream=keys.user_events(),
        group="outage",
        consumer="c1",
        dead_letters=keys.dead_letters(),
    )
    client = make_redis(server.url, settings)
    publisher = Redis.from_url(server.url, socket_timeout=2)
    consumer = StreamConsumer(client, config, record)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 10)
        before = user_event("user.updated")
        await publish(publisher, keys.user_events(), before)
        await eventually(lambda: str(before.id) in handled, "the event before the kill handled")

        server.kill()  # SIGKILL by PID; no persistence: the stream and group are gone
        await eventually(lambda: "Redis error" in caplog.text, "the consumer meets the dead server")
        server.restart()
        await publisher.connection_pool.disconnect()  # drop its sockets to the dead server
        after = user_event("user.deleted")
        await eventually(
            lambda: _publish_when_up(publisher, keys, after),
            "the event published once the group is back",
            within=15,
        )
        await eventually(
            lambda: str(after.id) in handled, "the event after the restart handled", within=15
        )
        assert not task.done()
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        await publisher.aclose()


async def _publish_when_up(redis: Redis, keys: Keys, event: UserEventModel) -> bool:
    try:
        if not await redis.exists(keys.user_events()):
            return False  # the consumer has not recreated its group yet
        await publish(redis, keys.user_events(), event)
    except RedisError:
        return False  # not up yet, or a socket that died with the server
    return True
