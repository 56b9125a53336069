"""Fixtures for the api on real PostgreSQL and Redis: migrated database, app, client, probes.

The database is migrated once per run with the real Alembic migrations (`api.migrate`);
each test starts from empty tables, so counts and pages are its own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from api.deps import STATE_KEY
from api.main import create_app
from api.migrate import upgrade
from api.state import ApiState
from devtools.settings import StackSettings
from shared.settings import normalise_database_url
from tests.integration.session.wiring import session_backend, sign_in

# A load of one user by id, as the repository issues it (SQLAlchemy's compiled SELECT).
_USER_BY_ID = re.compile(r"FROM users\s+WHERE users\.id = ", re.IGNORECASE)
_PAGE = re.compile(r"FROM users ORDER BY", re.IGNORECASE)
# Every user `Api.create_user` makes has this password, so a test can sign it in.
PASSWORD = "s3cret-pw"


@pytest.fixture(scope="session")
def api_database_url(database_url: str) -> str:
    """The test database, upgraded to head by the real migrations."""
    url = normalise_database_url(database_url)
    upgrade(url)
    return url


async def _truncate(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM outbox"))
            await conn.execute(text("DELETE FROM users"))
    finally:
        await engine.dispose()


@pytest.fixture
async def clean_database(api_database_url: str) -> str:
    await _truncate(api_database_url)
    return api_database_url


@dataclass
class SqlProbe:
    """Counts the SQL statements that load users, via a SQLAlchemy engine event."""

    statements: list[str] = field(default_factory=list)

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    @property
    def user_loads(self) -> int:
        return sum(1 for s in self.statements if _USER_BY_ID.search(s) and "FOR UPDATE" not in s)

    @property
    def page_loads(self) -> int:
        return sum(1 for s in self.statements if _PAGE.search(s))


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    state: ApiState
    sql: SqlProbe
    settings: StackSettings

    async def create_user(self, name: str = "Ada") -> dict[str, Any]:
        body = {"email": f"{uuid.uuid4().hex}@example.com", "name": name, "password": PASSWORD}
        response = await self.client.post("/v1/users", json=body)
        assert response.status_code == 201, response.text
        document: dict[str, Any] = response.json()
        return document

    @asynccontextmanager
    async def sessions(self, **overrides: Any) -> AsyncIterator[None]:
        """Serve this api's session calls from an in-process session service (see
        tests/integration/session/wiring.py); `overrides` change that service's settings only,
        e.g. `redis_url` for a Redis of its own."""
        async with session_backend(self.state, self.settings.model_copy(update=overrides)):
            yield

    async def sign_in(self, user: dict[str, Any]) -> dict[str, str]:
        """Log in a user made by `create_user` (inside `sessions()`); its session's headers."""
        return await sign_in(self.client, user["email"], PASSWORD)


def public(user: dict[str, Any]) -> dict[str, Any]:
    """The public view of a user `create_user` returned (its own view): no email."""
    return {name: value for name, value in user.items() if name != "email"}


def lifespan_state(manager: LifespanManager) -> ApiState:
    """The `ApiState` the app's lifespan yielded. asgi-lifespan keeps the lifespan state in
    `_state` (it has no public accessor); the app itself reads it the public way."""
    state = manager._state[STATE_KEY]
    assert isinstance(state, ApiState)
    return state


ApiFactory = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
def make_api(clean_database: str, make_settings: Callable[..., StackSettings]) -> ApiFactory:
    """`async with make_api(**settings) as api`: a started app with an in-process client."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Api]:
        # Rate limiting off unless asked for: it has its own tests (tests/integration/ratelimit),
        # and here it would throttle stampedes and add its commands to command counts.
        overrides = {"rate_limit_enabled": False, **overrides}
        settings = make_settings(database_url=clean_database, **overrides)
        app = create_app(settings)
        async with LifespanManager(app) as manager:
            state = lifespan_state(manager)
            probe = SqlProbe()
            event.listen(state.engine.sync_engine, "before_cursor_execute", probe)
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield Api(app, client, state, probe, settings)

    return start


@pytest.fixture
async def api(make_api: ApiFactory) -> AsyncIterator[Api]:
    # Near cache off: these tests look at Redis; the near cache has tests of its own.
    async with make_api(near_cache_size=0) as started:
        yield started
