"""The session app in-process (real lifespan, real Redis) behind an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from devtools.settings import StackSettings
from session_service.main import create_app
from tests.integration.api.conftest import api, api_database_url, clean_database, make_api

# The api's fixtures, for tests of the api's session wiring (test_api_wiring.py).
__all__ = ["api", "api_database_url", "clean_database", "make_api"]

TOKEN = "integration-service-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

SettingsFactory = Callable[..., StackSettings]


@asynccontextmanager
async def serve(settings: StackSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://session", headers=AUTH
        ) as client:
            yield client


@pytest.fixture
def session_settings(make_settings: SettingsFactory) -> SettingsFactory:
    def build(**overrides: Any) -> StackSettings:
        # A short block keeps shutdown (the consumer finishes its read) quick.
        values: dict[str, Any] = {"service_token": TOKEN, "stream_block": "100ms"}
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
async def client(session_settings: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(session_settings()) as http:
        yield http
