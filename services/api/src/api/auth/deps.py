"""`SignedIn` and `OwnAccount`: the dependencies that put a session in front of a route.

`SignedIn` answers 401 without a live session and 503 when the session service does not
answer (fail closed), then applies the `user` rate policy. `OwnAccount` adds 403 when the
path's user is not the signed-in one.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar
from uuid import UUID

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie
from starlette.responses import Response

from api.adapters.sessions import SessionClient, SessionInfo, SessionServiceUnavailableError
from api.auth.cookies import COOKIE, clear_session_cookie, session_cookie, set_session_cookie
from api.deps import UserIdPath, api_state
from api.ratelimit.middleware import enforce_user_limit
from shared.http import ApiError, error_responses
from shared.sessionids import session_hash

T = TypeVar("T")
# Every route behind SignedIn can answer these.
AUTH_ERRORS = error_responses(401, 503)


def unauthorized() -> ApiError:
    return ApiError(401, "UNAUTHORIZED", "sign in first: no live session")


def unavailable() -> ApiError:
    return ApiError(
        503,
        "SESSION_SERVICE_UNAVAILABLE",
        "sessions cannot be checked right now",
        None,
        {"Retry-After": "1"},
    )


async def guarded(call: Awaitable[T]) -> T:
    """Await a session-service call; no answer is a 503, never a pass."""
    try:
        return await call
    except SessionServiceUnavailableError:
        raise unavailable() from None


@dataclass(frozen=True, slots=True)
class Signed:
    """The request's session. `session_id` is the cookie's value: never log it."""

    session_id: str
    info: SessionInfo
    client: SessionClient
    secure_cookies: bool

    @property
    def user_id(self) -> UUID:
        return self.info.user_id

    @property
    def session_hash(self) -> str:
        # As the session service names it (and as events carry it): SHA-256 hex of the id.
        return session_hash(self.session_id)

    async def renew(self, response: Response) -> None:
        """Rotate this session (a privilege change) and send the new cookie."""
        issued = await guarded(self.client.rotate(self.session_id))
        if issued is None:
            raise unauthorized()
        set_session_cookie(response, issued, secure=self.secure_cookies)

    async def sign_out(self, response: Response) -> None:
        await guarded(self.client.destroy(self.session_id))
        clear_session_cookie(response, secure=self.secure_cookies)


async def session_client(request: Request) -> SessionClient:
    return api_state(request.scope).session_service


SessionsClient = Annotated[SessionClient, Depends(session_client)]


# Declares the cookie in the OpenAPI document (a security scheme on every route behind
# `SignedIn` / `OwnAccount`); the value itself is read and shape-checked by `session_cookie`.
SESSION_COOKIE = APIKeyCookie(
    name=COOKIE,
    scheme_name="sessionCookie",
    description="the session id set by POST /v1/auth/login (HttpOnly, SameSite=Lax)",
    auto_error=False,
)
CookieDeclared = Annotated[str | None, Security(SESSION_COOKIE)]


async def signed_in(request: Request, client: SessionsClient, _: CookieDeclared) -> Signed:
    session_id = session_cookie(request)
    if session_id is None:
        raise unauthorized()
    settings = api_state(request.scope).settings
    info = await guarded(client.get(session_id))
    if info is None:
        raise unauthorized()
    info = await _slide(client, session_id, info, settings.session_idle_ttl)
    await enforce_user_limit(request, info.user_id)
    return Signed(session_id, info, client, settings.secure_cookies)


async def _slide(
    client: SessionClient, session_id: str, info: SessionInfo, idle: float
) -> SessionInfo:
    """Extend the idle expiry once half of it is used: one refresh per half idle period."""
    left = info.expires_at - datetime.now(UTC)
    if left > timedelta(seconds=idle / 2) or info.expires_at >= info.absolute_expires_at:
        return info
    refreshed = await guarded(client.refresh(session_id))
    if refreshed is None:
        raise unauthorized()
    return refreshed


SignedIn = Annotated[Signed, Depends(signed_in)]


async def own_account(
    request: Request, user_id: UserIdPath, client: SessionsClient, cookie: CookieDeclared
) -> Signed:
    # signed_in is called here, not declared as a sub-dependency: FastAPI validates this
    # function's parameters first, so a malformed id is a 422 before any session check.
    me = await signed_in(request, client, cookie)
    if me.user_id != user_id:
        raise ApiError(403, "FORBIDDEN", "only the signed-in user's own account")
    return me


OwnAccount = Annotated[Signed, Depends(own_account)]
