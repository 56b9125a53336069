"""Housekeeping and the transient-failure rule, on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from devtools.polling import eventually
from devtools.settings import StackSettings
from shared.keys import Keys
from shared.lock import lock
from shared.streams import (
    ConsumerConfig,
    Delivery,
    Housekeeper,
    StreamConsumer,
    StreamMetrics,
    stream_status,
)
from shared.streams.deadletter import letter_fields
from shared.streams.housekeeping import count_by_group
from tests.integration.streams.support import publish, sample, user_event

GROUP = "hk"


def _housekeeper(
    redis: Redis, keys: Keys, consumer: str, metrics: StreamMetrics | None = None
) -> Housekeeper:
    return Housekeeper(
        redis=redis,
        keys=keys,
        stream=keys.user_events(),
        group=GROUP,
        consumer=consumer,
        interval=30.0,
        idle_limit=0.05,
        metrics=metrics,
    )


async def test_idle_consumers_without_pending_are_pruned_by_one_instance(
    redis: Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    stream = keys.user_events()
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for _ in range(3):
        await publish(redis, stream, user_event("user.updated"))
    await redis.xreadgroup(GROUP, "holder", {stream: ">"}, count=1)  # keeps 1 pending
    gone: Any = await redis.xreadgroup(GROUP, "gone", {stream: ">"}, count=1)
    await redis.xack(stream, GROUP, gone[0][1][0][0])
    await redis.xgroup_createconsumer(stream, GROUP, "me")

    async def idle_enough() -> bool:
        consumers: Any = await redis.xinfo_consumers(stream, GROUP)
        return all(c["idle"] >= 60 for c in consumers)

    await eventually(idle_enough, "every consumer idle for 60 ms")
    registry = CollectorRegistry()
    first = _housekeeper(redis, keys, "me", StreamMetrics.create(registry))
    other = _housekeeper(redis, keys, "other")
    async with lock(redis, keys, f"streams.housekeeping.{GROUP}", timeout=0):
        assert await other.run_once() is None  # another instance is pruning: skip
    removed = await first.run_once()
    consumers: Any = await redis.xinfo_consumers(stream, GROUP)
    names = sorted(c["name"].decode() for c in consumers)
    # "gone" (idle, nothing pending) is pruned; "holder" keeps its pending entry; "me" is us.
    assert (removed, names) == (["gone"], ["holder", "me"])
    assert sample(registry, "stream_pending", group=GROUP) == 1
    assert sample(registry, "stream_lag", group=GROUP) == 1  # the third entry was never read
    age = registry.get_sample_value("stream_oldest_pending_age_seconds", {"group": GROUP})
    assert age is not None
    assert age >= 0

    status = await stream_status(redis, stream)
    assert status.length == 3
    assert [(g.name, g.pending, g.lag) for g in status.groups] == [(GROUP, 1, 1)]


async def test_status_of_a_missing_stream_is_empty(redis: Redis, key_prefix: str) -> None:
    status = await stream_status(redis, Keys(key_prefix).user_events())
    assert (status.length, status.groups) == (0, [])


async def test_an_unreachable_server_never_sends_an_entry_to_the_dlq(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", stream_claim_idle="50ms")
    keys = Keys(settings.key_prefix)

    async def unreachable(batch: Sequence[Delivery]) -> Mapping[str, BaseException]:
        raise RedisConnectionError("cache is down")

    config = ConsumerConfig.from_settings(
        settings,
        stream=keys.user_events(),
        group=GROUP,
        consumer="c1",
        dead_letters=keys.dead_letters(),
    )
    consumer = StreamConsumer(redis, config, unreachable)
    await publish(redis, keys.user_events(), user_event("user.deleted"))
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(consumer.ready.wait(), 10)

    async def retried_past_the_limit() -> bool:
        rows: Any = await redis.xpending_range(keys.user_events(), GROUP, "-", "+", 10)
        return bool(rows) and rows[0]["times_delivered"] > settings.stream_max_deliveries

    try:
        await eventually(retried_past_the_limit, "delivered past the limit", within=15)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
    assert await redis.xlen(keys.dead_letters()) == 0
    summary = await redis.xpending(keys.user_events(), GROUP)
    assert summary["pending"] == 1


async def _letters(redis: Redis, keys: Keys, group: str, count: int) -> None:
    pipe = redis.pipeline(transaction=False)
    for n in range(count):
        fields: dict[Any, Any] = letter_fields(
            {b"data": b"{}"}, error="e", reason="r", group=group, deliveries=1,
            stream=keys.user_events(), entry_id=f"1-{n}", consumer="c",
        )  # fmt: skip
        pipe.xadd(keys.dead_letters(), fields)  # type: ignore[unused-awaitable]  # queued
    await pipe.execute()


async def test_housekeeping_reports_the_dead_letters_of_its_group_and_of_every_group(
    redis: Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await redis.xgroup_create(keys.user_events(), GROUP, id="0", mkstream=True)
    await _letters(redis, keys, GROUP, 3)
    await _letters(redis, keys, "other", 450)  # more than one chunk of the server-side count
    await _letters(redis, keys, "*", 2)
    registry = CollectorRegistry()
    await _housekeeper(redis, keys, "me", StreamMetrics.create(registry)).run_once()
    assert sample(registry, "stream_dead_letters", group=GROUP) == 3
    assert sample(registry, "stream_dead_letters", group="*") == 2

    assert await count_by_group(redis, keys.dead_letters(), cap=10_000) == (
        {GROUP: 3, "other": 450, "*": 2},
        True,
    )
    partial, complete = await count_by_group(redis, keys.dead_letters(), cap=300)
    assert (sum(partial.values()), complete) == (300, False)
