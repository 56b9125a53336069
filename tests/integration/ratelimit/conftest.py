"""A minimal FastAPI app with the api's rate-limit middleware, over a real Redis.

The app has the api's rate-limited paths (a plain route, the two auth routes, a route
behind a user dependency that calls `enforce_user_limit`, `/health`), nothing else: the
middleware's behaviour is tested here; tests/integration/ratelimit/test_api.py goes through
the real api.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from api.ratelimit import enforce_user_limit, install_rate_limiting
from devtools.settings import StackSettings
from shared.http import install_error_handlers


async def signed_in_user(request: Request) -> str | None:
    # Stands in for the api's auth dependency: it knows the user, then calls the limiter.
    uid = request.headers.get("x-test-user")
    if uid:
        await enforce_user_limit(request, uid)
    return uid


def make_app(
    settings: StackSettings, redis: Callable[[], Redis], registry: CollectorRegistry
) -> FastAPI:
    app = FastAPI()
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

    @app.get("/v1/users/me")
    async def me(user: Annotated[str | None, Depends(signed_in_user)]) -> dict[str, Any]:
        return {"user": user}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    install_rate_limiting(app, settings, redis, registry)
    return app


@asynccontextmanager
async def client_for(app: FastAPI, peer: str = "203.0.113.10") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client
