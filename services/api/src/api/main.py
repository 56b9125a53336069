"""The composition root: `create_app(settings)` builds the api; its lifespan connects.

Run with `uvicorn api.main:create_app --factory`. Features plug in with one line each:
a router in `_routers()`, a middleware in `_middleware()`. The connected half (clients,
use cases, background tasks) is `api.state.open_state`, run by the lifespan.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from api.config import SERVICE_NAME, ApiSettings, load
from api.deps import SLOT
from api.errors import install_domain_errors
from api.fastpath import UserFastPath, user_route
from api.metrics import ApiMetrics
from api.middleware import HttpMetricsMiddleware
from api.ratelimit.middleware import RateLimitMiddleware
from api.ratelimit.policies import EXEMPT_PATHS, Policies
from api.routes import auth, health, users
from api.state import open_state
from shared.http import (
    BodyLimitMiddleware,
    JsonResponse,
    RequestIdMiddleware,
    document_common_errors,
    document_error,
    install_error_handlers,
)
from shared.logs import setup_logging
from shared.metrics import mount_metrics
from shared.tracing import NATIVE_TELEMETRY_OFF, configure_tracing


def _routers() -> list[APIRouter]:
    """Every router of the api, in the order the OpenAPI document lists them."""
    return [
        health.router,
        auth.router,  # before users: its /v1/users/me must win over /v1/users/{user_id}
        users.router,
    ]


def _middleware(app: FastAPI, settings: ApiSettings, metrics: ApiMetrics) -> None:
    """Every middleware. Starlette runs the last added first: the request id is outermost."""
    if settings.near_cache_size > 0:
        # Innermost, before the router: near-cache hits skip routing, never the limiter.
        app.add_middleware(UserFastPath, route=user_route(users.router))
    if settings.rate_limit_enabled:
        # Inside the metrics: its 429s are still counted and timed.
        policies = Policies.from_settings(settings)
        app.add_middleware(RateLimitMiddleware, policies=policies, trusted=settings.trusted_proxies)
    # Outside the limiter: a declared oversize body costs no Redis call to refuse.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)


def _document_limits(path: str, _method: str, operation: dict[str, Any]) -> None:
    """Every rate-limited operation can answer 429, and 503 while Redis is down for a policy
    in RATE_LIMIT_FAIL_CLOSED (default `auth`)."""
    if path not in EXEMPT_PATHS:
        document_error(operation, 429, "a rate-limit policy refused the request (Retry-After)")
        document_error(operation, 503, "a fail-closed rate-limit policy cannot be checked")


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or load()
    setup_logging(SERVICE_NAME, settings.log_level, settings.log_format)
    metrics = ApiMetrics()
    tracing = configure_tracing(SERVICE_NAME)

    app = FastAPI(
        telemetry=NATIVE_TELEMETRY_OFF,
        title="api",
        version="1.0.0",
        description="Users on SQL, read through Redis with leases; events via an outbox.",
        # The state opened at start, closed at shutdown; the tracer flushed last.
        lifespan=SLOT.lifespan(lambda: open_state(settings, metrics, tracing), tracing.aclose),
        default_response_class=JsonResponse,
    )
    install_error_handlers(app)
    install_domain_errors(app)
    for router in _routers():
        app.include_router(router)
    mount_metrics(app, metrics.registry)
    document_common_errors(app, _document_limits if settings.rate_limit_enabled else None)
    _middleware(app, settings, metrics)
    tracing.instrument(app)  # outermost: the request's span covers every middleware
    return app
