"""The composition root: `create_app(settings)` builds the api; its lifespan connects.

Run with `uvicorn api.main:create_app --factory`. Features plug in with one line each:
a router in `_routers()`, a middleware in `_middleware()`.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api.config import SERVICE_NAME, ApiSettings, load
from api.deps import attach_resources
from api.errors import install_domain_errors
from api.fastpath import install_user_fast_path
from api.middleware import HttpMetricsMiddleware
from api.ratelimit import install_rate_limiting
from api.resources import Resources
from api.routes import auth, health, users
from shared.http import (
    BodyLimitMiddleware,
    JsonResponse,
    RequestIdMiddleware,
    install_error_handlers,
)
from shared.logs import setup_logging
from shared.metrics import mount_metrics


def _routers() -> list[APIRouter]:
    """Every router of the api, in the order the OpenAPI document lists them."""
    return [
        health.router,
        auth.router,  # before users: its /v1/users/me must win over /v1/users/{user_id}
        users.router,
    ]


def _middleware(app: FastAPI, settings: ApiSettings, resources: Resources) -> None:
    """Every middleware. Starlette runs the last added first: the request id is outermost."""
    if settings.near_cache_size > 0:
        # Innermost, before the router: near-cache hits skip routing, never the limiter.
        install_user_fast_path(app, users.router, lambda: resources.opened.near, resources.keys)
    # Innermost: its 429s are still counted and timed by the metrics middleware.
    install_rate_limiting(app, settings, lambda: resources.opened.redis, resources.metrics.registry)
    # Outside the limiter: a declared oversize body costs no Redis call to refuse.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=resources.metrics)
    app.add_middleware(RequestIdMiddleware)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or load()
    setup_logging(SERVICE_NAME, settings.log_level, settings.log_format)
    resources = Resources(settings)
    app = FastAPI(
        title="api",
        version="1.0.0",
        description="Users on SQL, read through Redis with leases; events via an outbox.",
        lifespan=resources.lifespan,
        default_response_class=JsonResponse,
    )
    attach_resources(app, resources)
    install_error_handlers(app)
    install_domain_errors(app)
    for router in _routers():
        app.include_router(router)
    mount_metrics(app, resources.metrics.registry)
    _middleware(app, settings, resources)
    return app
