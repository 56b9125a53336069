"""HTTP routes on the FastStream ASGI app: `/health` and `/metrics`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from faststream.asgi import AsgiResponse, HttpHandler, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import Redis

from shared.connections import Health, redis_health

logger = logging.getLogger(__name__)
_DOWN = Health("down", None, "not connected")


@dataclass(slots=True)
class Runtime:
    """What the routes read; the lifespan fills it in and clears it on the way out."""

    data: Redis | None = None
    cache: Redis | None = None
    consumer: str | None = None
    failure: str | None = None

    def task_ended(self, task: asyncio.Task[None]) -> None:
        """A consumer task ended: on an error, log it and make /health answer 503."""
        if task.cancelled() or task.exception() is None:
            return
        self.failure = f"{type(task.exception()).__name__}: {task.exception()}"
        logger.error("invalidator task failed: %s", self.failure, exc_info=task.exception())


def health_route(runtime: Runtime) -> HttpHandler:
    async def health() -> AsgiResponse:
        """`ok`; `degraded` when only the cache Redis is down; 503 when the stream's is."""
        data = await redis_health(runtime.data) if runtime.data else _DOWN
        cache = await redis_health(runtime.cache) if runtime.cache else _DOWN
        if data.status != "ok" or runtime.failure:
            status, code = "down", 503  # no stream or no consumer: nothing is consumed
        else:
            status, code = ("ok" if cache.status == "ok" else "degraded"), 200
        body = {
            "status": status,
            "consumer": runtime.consumer,
            "failure": runtime.failure,
            "components": {"redis": data.as_dict(), "cache": cache.as_dict()},
        }
        return AsgiResponse(orjson.dumps(body), code, {"Content-Type": "application/json"})

    return get(health, include_in_schema=False)


def metrics_route(registry: CollectorRegistry) -> HttpHandler:
    async def metrics() -> AsgiResponse:
        return AsgiResponse(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})

    return get(metrics, include_in_schema=False)
