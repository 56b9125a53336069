"""The session service's state: its Redis client, the use cases and the background tasks,
built in one place for the app's life.

`open_state(settings, metrics)` builds the client, the session store and event publisher
behind the `Sessions` use cases, and starts the consumer of group `session` (revocations
from user events), its housekeeping and the sampler of the active-sessions gauge; on exit it
stops them (the consumer finishes its batch: stop, not cancel) and closes the client.
`create_app`'s lifespan hands the `SessionState` to every request. No ping gate: the service
starts without Redis and answers 503 until it is back (fail closed), rather than crash-loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Final

from session_service.adapters.events import StreamPublisher
from session_service.adapters.store import RedisSessionStore
from session_service.config import SessionSettings, Timeouts
from session_service.consumer import Revoker
from session_service.metrics import SessionMetrics, sample_active
from session_service.usecases import Sessions
from shared.connections import RedisClient, describe_target, make_redis, warm_idle_connections
from shared.keys import SESSION_GROUP, Keys
from shared.streams import build_consumer, build_housekeeper
from shared.tasks import TaskSet
from shared.tracing import Tracing

logger = logging.getLogger(__name__)
# Shutdown must finish: the background tasks get this long to stop.
_STOP_TIMEOUT: Final = 5.0


@dataclass(slots=True)
class SessionState:
    settings: SessionSettings
    redis: RedisClient
    sessions: Sessions
    tasks: TaskSet


def build_sessions(
    redis: RedisClient, settings: SessionSettings, metrics: SessionMetrics
) -> Sessions:
    keys = Keys(settings.key_prefix)
    timeouts = Timeouts.of(settings)
    store = RedisSessionStore(
        redis,
        keys,
        idle_ms=timeouts.idle_ms,
        absolute_ms=timeouts.absolute_ms,
        max_per_user=settings.session_max_per_user,
        replica_wait_ms=timeouts.replica_wait_ms,
    )
    return Sessions(store, StreamPublisher(redis, keys, settings.stream_maxlen), metrics)


@asynccontextmanager
async def open_state(
    settings: SessionSettings, metrics: SessionMetrics, tracing: Tracing | None = None
) -> AsyncIterator[SessionState]:
    spans = (tracing or Tracing()).spans("session_service")
    async with AsyncExitStack() as stack:
        redis = make_redis(settings.redis_target, settings)
        stack.push_async_callback(redis.aclose)
        tasks = TaskSet()
        stack.push_async_callback(tasks.close, _STOP_TIMEOUT)
        sessions = build_sessions(redis, settings, metrics)
        # The toolkit creates the group at id 0 (retrying while Redis is away) before it
        # reads, so events published before the service first started are not skipped.
        consumer = build_consumer(
            redis, settings, SESSION_GROUP, Revoker(sessions, spans), metrics=metrics.stream,
            spans=spans,
        )  # fmt: skip
        housekeeper = build_housekeeper(redis, settings, consumer, metrics.stream)
        sampling = asyncio.Event()
        tasks.spawn(consumer.run(), "session-consumer", stop=consumer.stop)
        tasks.spawn(housekeeper.run(), "session-housekeeping")
        tasks.spawn(
            sample_active(
                metrics, sessions.store.count_active, settings.housekeeping_interval, sampling
            ),
            "active-sessions",
            stop=sampling.set,
        )
        tasks.spawn(warm_idle_connections(redis, settings.redis_min_idle_conns), "redis-warm-up")
        logger.info(
            "session store on Redis at %s; consuming group %s as %s",
            describe_target(settings.redis_target),
            SESSION_GROUP,
            consumer.config.consumer,
        )
        yield SessionState(settings, redis, sessions, tasks)
