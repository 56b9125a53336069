"""The invalidator: a FastStream ASGI app whose lifespan runs the stream toolkit's consumer.

Run: `uvicorn invalidator.main:create_app --factory --port $INVALIDATOR_PORT` (what
`make run` does) or `faststream run invalidator.main:create_app --factory`.

Why FastStream is the shell and not the consuming loop: see `invalidator.contract`. In
short, we want ≥ 0.8× of a raw XREADGROUP drain plus retry and dead letters;
FastStream's subscriber gives ≈ 0.5× in batch mode and neither of the other two. The app
still is a FastStream app: FastStream runs the ASGI lifespan (our consumer lives in it),
serves `/health`, `/metrics` and the AsyncAPI document at `/asyncapi`, and generates that
document. Its broker declares nothing at run time (FastStream requires one per app); with
no subscriber it does not even need Redis to start, so the app comes up with Redis down,
answers 503 and recovers by itself (tests/e2e/invalidator).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from faststream.asgi import AsgiFastStream
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI
from redis.asyncio import Redis

from invalidator.config import GROUP, SERVICE, InvalidatorSettings, load
from invalidator.contract import contract_broker
from invalidator.metrics import InvalidatorMetrics
from invalidator.purge import Purger
from invalidator.routes import Runtime, health_route, metrics_route
from shared.connections import make_redis
from shared.keys import Keys
from shared.logs import setup_logging
from shared.metrics import make_registry
from shared.streams import StreamConsumer, build_consumer, build_housekeeper

logger = logging.getLogger(__name__)


def specification(settings: InvalidatorSettings) -> AsyncAPI:
    return AsyncAPI(
        contract_broker(settings),
        title="invalidator",
        version="1.0.0",
        description="Purges cached users and list generations from the user event stream",
    )


def create_app(settings: InvalidatorSettings | None = None) -> AsgiFastStream:
    settings = settings or load()
    setup_logging(SERVICE, settings.log_level, settings.log_format)
    registry = make_registry()
    metrics = InvalidatorMetrics.create(registry)
    runtime = Runtime()
    # The shell's broker declares nothing (see module docstring).
    broker = RedisBroker(settings.redis_dsn, logger=logging.getLogger("faststream"))

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with _consuming(settings, metrics, runtime):
            yield

    app = AsgiFastStream(
        broker,
        asgi_routes=[("/health", health_route(runtime)), ("/metrics", metrics_route(registry))],
        lifespan=lifespan,
        specification=specification(settings),
        asyncapi_path="/asyncapi",
    )
    # Only the contract belongs in the document, not the shell's empty broker.
    app.schema.brokers.remove(broker)  # type: ignore[attr-defined]  # AsyncAPI factory keeps a list
    return app


@asynccontextmanager
async def _consuming(
    settings: InvalidatorSettings, metrics: InvalidatorMetrics, runtime: Runtime
) -> AsyncIterator[None]:
    """Clients, the group (at id 0, before anything reads), the consumer and housekeeping."""
    keys = Keys(settings.key_prefix)
    async with AsyncExitStack() as stack:
        data = _client(stack, settings.redis_dsn, settings)
        cache = (
            data
            if settings.cache_redis_dsn == settings.redis_dsn
            else _client(stack, settings.cache_redis_dsn, settings)
        )
        consumer = build_consumer(
            data, settings, GROUP, Purger(cache, keys, metrics), metrics=metrics.stream
        )
        housekeeper = build_housekeeper(data, settings, consumer, metrics.stream)
        runtime.data, runtime.cache, runtime.consumer = data, cache, consumer.config.consumer
        # consumer.run() creates the group at id 0 (retrying while Redis is away) before it
        # reads anything, so entries published before the first start are consumed.
        tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(housekeeper.run())]
        for task in tasks:
            task.add_done_callback(runtime.task_ended)
        logger.info("consuming %s as %s/%s", keys.user_events(), GROUP, runtime.consumer)
        try:
            yield
        finally:
            await _shut_down(consumer, tasks, settings.stream_block + 5.0)
            runtime.data = runtime.cache = None


async def _shut_down(
    consumer: StreamConsumer, tasks: list[asyncio.Task[None]], grace: float
) -> None:
    """Let the consumer finish its batch (stop, not cancel: see StreamConsumer.stop)."""
    consumer.stop()
    tasks[1].cancel()  # housekeeping holds nothing that must finish
    _done, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        logger.warning("task %s did not stop within %.1fs; cancelling it", task.get_name(), grace)
        task.cancel()


def _client(stack: AsyncExitStack, url: str, settings: InvalidatorSettings) -> Redis:
    client = make_redis(url, settings)
    stack.push_async_callback(client.aclose)
    return client
