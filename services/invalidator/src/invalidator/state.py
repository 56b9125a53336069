"""The invalidator's state: its clients and its tasks, built in one place for the app's life.

`open_state(settings, metrics)` builds the data Redis (the stream) and the cache Redis (the
purged keys), the consumer of group `invalidator` with its batch handler (`usecases.Purger`)
and the group's housekeeping, starts them as tasks, and on exit stops the consumer (it
finishes its batch: stop, not cancel — see `StreamConsumer.stop`) and closes the clients in
reverse order. `create_app`'s lifespan hands the `InvalidatorState` to every request.
No ping gate: the app comes up with Redis down, answers 503 and recovers by itself; the
consumer creates its group at id 0 (retrying while Redis is away) before it reads anything.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from invalidator.config import GROUP, InvalidatorSettings
from invalidator.metrics import InvalidatorMetrics
from invalidator.usecases import Purger
from shared.connections import RedisClient, make_redis, warm_idle_connections
from shared.keys import Keys
from shared.streams import build_consumer, build_housekeeper
from shared.tasks import TaskSet
from shared.tracing import Tracing

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class InvalidatorState:
    settings: InvalidatorSettings
    data: RedisClient
    cache: RedisClient
    consumer: str  # this instance's consumer name in the group
    tasks: TaskSet


@asynccontextmanager
async def open_state(
    settings: InvalidatorSettings, metrics: InvalidatorMetrics, tracing: Tracing | None = None
) -> AsyncIterator[InvalidatorState]:
    keys = Keys(settings.key_prefix)
    spans = (tracing or Tracing()).spans("invalidator")
    async with AsyncExitStack() as stack:
        data = make_redis(settings.redis_target, settings)
        stack.push_async_callback(data.aclose)
        cache = data
        if settings.cache_redis_target != settings.redis_target:
            cache = make_redis(settings.cache_redis_target, settings)
            stack.push_async_callback(cache.aclose)
        tasks = TaskSet()
        # A batch in hand is finished first: one read's block plus time to purge it.
        stack.push_async_callback(tasks.close, settings.stream_block + 5.0)
        purger = Purger(cache, keys, metrics, spans)
        consumer = build_consumer(
            data, settings, GROUP, purger, metrics=metrics.stream, spans=spans
        )
        housekeeper = build_housekeeper(data, settings, consumer, metrics.stream)
        tasks.spawn(consumer.run(), "invalidator-consumer", stop=consumer.stop)
        tasks.spawn(housekeeper.run(), "invalidator-housekeeping")
        tasks.spawn(warm_idle_connections(data, settings.redis_min_idle_conns), "redis-warm-up")
        name = consumer.config.consumer
        logger.info("consuming %s as %s/%s", keys.user_events(), GROUP, name)
        yield InvalidatorState(settings, data, cache, name, tasks)
