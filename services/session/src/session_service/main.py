"""The composition root: `uvicorn session_service.main:create_app --factory`.

Its lifespan runs `state.open_state` (clients, use cases, the `session` consumer) and hands
the typed `SessionState` to every request; routes reach it through `deps`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from session_service.auth import ServiceTokenMiddleware
from session_service.config import SERVICE, SessionSettings, load
from session_service.deps import SLOT, State
from session_service.errors import install_session_errors
from session_service.metrics import SessionMetrics
from session_service.routes import router
from session_service.state import open_state
from shared.connections import redis_health
from shared.http import (
    BodyLimitMiddleware,
    JsonResponse,
    RequestIdMiddleware,
    document_common_errors,
    install_error_handlers,
)
from shared.logs import setup_logging
from shared.metrics import make_registry, mount_metrics
from shared.tracing import NATIVE_TELEMETRY_OFF, configure_tracing


async def health(state: State) -> JsonResponse:
    """`ok` when Redis answers; 503 otherwise, since no session can be served without it."""
    redis = await redis_health(state.redis)
    status = "ok" if redis.status == "ok" else "down"
    body = {"status": status, "components": {"redis": redis.as_dict()}}
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
    metrics = SessionMetrics(make_registry())
    tracing = configure_tracing(SERVICE)

    app = FastAPI(
        telemetry=NATIVE_TELEMETRY_OFF,
        title="session service",
        version="1.0.0",
        summary="Session lifecycle over Redis: ids shown once, stored hashed, revoked by events.",
        # The state opened at start, closed at shutdown; the tracer flushed last.
        lifespan=SLOT.lifespan(lambda: open_state(settings, metrics, tracing), tracing.aclose),
    )
    install_error_handlers(app)
    install_session_errors(app)
    app.include_router(router)
    app.add_api_route("/health", health, methods=["GET"], tags=["ops"])
    mount_metrics(app, metrics.registry)
    _document_token(app)
    document_common_errors(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    token = settings.service_token.get_secret_value()
    if token:
        app.add_middleware(ServiceTokenMiddleware, token=token)
    app.add_middleware(RequestIdMiddleware)
    tracing.instrument(app)
    return app
