"""For in-process api tests that need a signed-in user (PATCH and DELETE /v1/users/{id}).

`session_backend(app, settings)` serves the api's session calls from an in-process session
service on the same Redis (its real lifespan, consumer included): the api's pooled client
is swapped for one over an ASGI transport — injection, not patching. `sign_in` then logs a
user in through the api and returns the headers that carry the session.

    async with make_api() as api, session_backend(api.app, api.settings):
        headers = await sign_in(api.client, email, password)
        await api.client.patch(f"/v1/users/{uid}", json={...}, headers=headers)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from api.adapters.sessions import SessionClient
from api.deps import resources_of
from devtools.settings import StackSettings
from session_service.main import create_app as create_session_app


@asynccontextmanager
async def session_backend(api_app: FastAPI, settings: StackSettings) -> AsyncIterator[None]:
    opened = resources_of(api_app).opened
    session_app = create_session_app(settings.model_copy(update={"stream_block": 0.1}))
    async with LifespanManager(session_app) as manager:
        original = opened.session_client
        transport = httpx.ASGITransport(app=manager.app)
        opened.session_client = SessionClient(settings, transport=transport)
        try:
            yield
        finally:
            await opened.session_client.aclose()
            opened.session_client = original


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    """Log in through the api; the `Cookie` header of the new session."""
    response = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # the caller says which session each request carries
    return {"Cookie": f"session={response.cookies['session']}"}
