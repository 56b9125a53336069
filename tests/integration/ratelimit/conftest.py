"""A minimal FastAPI app with the api's rate-limit middleware and its real state, over a
real Redis.

The app has the api's rate-limited paths (a plain route, the auth routes, a route behind a
user dependency that calls `enforce_user_limit`, `/health`) and nothing else, so each case
controls its settings and its peer; the limiter, its breaker and its fallback are the api's
own, built by `api.state.open_state`. tests/integration/ratelimit/test_api.py goes through
the real api.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI, Request

from api.deps import STATE_KEY
from api.metrics import ApiMetrics
from api.migrate import upgrade
from api.ratelimit.middleware import RateLimitMiddleware, enforce_user_limit
from api.ratelimit.policies import Policies
from api.state import ApiState, open_state
from devtools.settings import StackSettings
from shared.http import install_error_handlers
from shared.settings import normalise_database_url
from tests.integration.api.conftest import lifespan_state


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    url = normalise_database_url(database_url)
    upgrade(url)
    return url


async def signed_in_user(request: Request) -> str | None:
    # Stands in for the api's auth dependency: it knows the user, then calls the limiter.
    uid = request.headers.get("x-test-user")
    if uid:
        await enforce_user_limit(request, uid)
    return uid


def make_app(settings: StackSettings) -> FastAPI:
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, ApiState]]:
        async with open_state(settings, metrics) as state:
            yield {STATE_KEY: state}

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/v1/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/auth/login")
    async def login() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/auth/register")
    async def register() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/users")
    async def create() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/v1/users/me")
    async def me(user: Annotated[str | None, Depends(signed_in_user)]) -> dict[str, Any]:
        return {"user": user}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    policies = Policies.from_settings(settings)
    app.add_middleware(RateLimitMiddleware, policies=policies, trusted=settings.trusted_proxies)
    return app


@dataclass
class Limited:
    client: httpx.AsyncClient
    state: ApiState

    def decisions(self, policy: str, decision: str) -> float:
        labels = {"policy": policy, "decision": decision}
        value = self.state.metrics.registry.get_sample_value("ratelimit_decisions_total", labels)
        return value or 0.0


@asynccontextmanager
async def limited_app(
    settings: StackSettings, peer: str = "203.0.113.10"
) -> AsyncIterator[Limited]:
    """The app of `make_app(settings)`, started, with a client that comes from `peer`."""
    async with LifespanManager(make_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield Limited(client, lifespan_state(manager))


@pytest.fixture
def make_settings(
    make_settings: Callable[..., StackSettings], migrated_database: str
) -> Callable[..., StackSettings]:
    """The harness's settings on a migrated database (the api's relay polls its outbox)."""

    def build(**overrides: Any) -> StackSettings:
        return make_settings(**{"database_url": migrated_database, **overrides})

    return build
