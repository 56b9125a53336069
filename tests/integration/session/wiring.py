"""For in-process api tests that need a signed-in user (PATCH and DELETE /v1/users/{id}).

`session_backend(api_state, settings)` serves the api's session calls from an in-process
session service on the same Redis (its real lifespan, consumer included): the state's
session-service client is swapped for one over an ASGI transport — injection, not
patching. `sign_in` then logs a user in through the api and returns the headers that carry
the session.

    async with make_api() as api, session_backend(api.state, api.settings):
        headers = await sign_in(api.client, email, password)
        await api.client.patch(f"/v1/users/{uid}", json={...}, headers=headers)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager

from api.adapters.sessions import SessionClient
from api.state import ApiState
from devtools.settings import StackSettings
from session_service.main import create_app as create_session_app


@asynccontextmanager
async def session_backend(api: ApiState, settings: StackSettings) -> AsyncIterator[None]:
    session_app = create_session_app(settings.model_copy(update={"stream_block": 0.1}))
    async with LifespanManager(session_app) as manager:
        original = api.session_service
        transport = httpx.ASGITransport(app=manager.app)
        api.session_service = SessionClient(settings, transport=transport)
        try:
            yield
        finally:
            await api.session_service.aclose()
            api.session_service = original


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    """Log in through the api; the `Cookie` header of the new session."""
    response = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # the caller says which session each request carries
    return {"Cookie": f"session={response.cookies['session']}"}
