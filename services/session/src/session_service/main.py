"""The composition root: `uvicorn session_service.main:create_app --factory`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from session_service.adapters.events import StreamPublisher
from session_service.adapters.store import RedisSessionStore
from session_service.auth import ServiceTokenMiddleware
from session_service.config import SERVICE, SessionSettings, Timeouts, load
from session_service.consumer import STOP_TIMEOUT, start_consumer
from session_service.errors import install_session_errors
from session_service.metrics import SessionMetrics, sample_active
from session_service.routes import router
from session_service.usecases import Sessions
from shared.connections import describe_target, make_redis, redis_health
from shared.http import (
    BodyLimitMiddleware,
    JsonResponse,
    RequestIdMiddleware,
    install_error_handlers,
)
from shared.keys import Keys
from shared.logs import setup_logging
from shared.metrics import make_registry, mount_metrics

logger = logging.getLogger(__name__)


def build_sessions(redis: Redis, settings: SessionSettings, metrics: SessionMetrics) -> Sessions:
    keys = Keys(settings.key_prefix)
    timeouts = Timeouts.of(settings)
    store = RedisSessionStore(
        redis,
        keys,
        idle_ms=timeouts.idle_ms,
        absolute_ms=timeouts.absolute_ms,
        max_per_user=settings.session_max_per_user,
    )
    return Sessions(store, StreamPublisher(redis, keys, settings.stream_maxlen), metrics)


async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=STOP_TIMEOUT)
    except TimeoutError:
        logger.warning("active-session sampler did not stop in time; abandoned")


def _lifespan(
    settings: SessionSettings, metrics: SessionMetrics, registry: CollectorRegistry
) -> Any:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            # No ping gate: the service starts without Redis and answers 503 until it is
            # back (fail closed), rather than crash-looping; the consumer retries meanwhile.
            redis = make_redis(settings.redis_dsn, settings)
            stack.push_async_callback(redis.aclose)
            sessions = build_sessions(redis, settings, metrics)
            stop = asyncio.Event()
            sampler = asyncio.create_task(
                sample_active(
                    metrics, sessions.store.count_active, settings.housekeeping_interval, stop
                )
            )
            stack.push_async_callback(_stop, sampler, stop)
            start_consumer(stack, redis, settings, sessions, registry)
            logger.info("session store on Redis at %s", describe_target(settings.redis_dsn))
            yield {"sessions": sessions, "redis": redis}

    return lifespan


async def health(request: Request) -> JsonResponse:
    """`ok` when Redis answers; 503 otherwise, since no session can be served without it."""
    state = await redis_health(request.state.redis)
    status = "ok" if state.status == "ok" else "down"
    body = {"status": status, "components": {"redis": state.as_dict()}}
    return JsonResponse(body, status_code=200 if status == "ok" else 503)


def _document_token(app: FastAPI) -> None:
    """Declare the bearer token in the OpenAPI document: every operation but /health."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI after the first call; edits are idempotent
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["serviceToken"] = {"type": "http", "scheme": "bearer"}
        schema["security"] = [{"serviceToken": []}]
        schema["paths"]["/health"]["get"]["security"] = []
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise


def create_app(settings: SessionSettings | None = None) -> FastAPI:
    settings = settings or load()
    setup_logging(SERVICE, settings.log_level, settings.log_format)
    registry = make_registry()
    metrics = SessionMetrics(registry)
    app = FastAPI(
        title="session service",
        version="1.0.0",
        summary="Session lifecycle over Redis: ids shown once, stored hashed, revoked by events.",
        lifespan=_lifespan(settings, metrics, registry),
    )
    install_error_handlers(app)
    install_session_errors(app)
    app.include_router(router)
    app.add_api_route("/health", health, methods=["GET"], tags=["ops"])
    mount_metrics(app, registry)
    _document_token(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    token = settings.service_token.get_secret_value()
    if token:
        app.add_middleware(ServiceTokenMiddleware, token=token)
    app.add_middleware(RequestIdMiddleware)
    return app
