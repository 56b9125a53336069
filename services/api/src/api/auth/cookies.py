"""The `session` cookie: HttpOnly, SameSite=Lax, Path=/, Secure when configured."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from api.adapters.sessions import IssuedSession
from shared.sessionids import well_formed

COOKIE: Final = "session"


def session_cookie(request: Request) -> str | None:
    """The cookie's value when it could be a session id; anything else counts as none."""
    value = request.cookies.get(COOKIE)
    return value if value is not None and well_formed(value) else None


def set_session_cookie(response: Response, issued: IssuedSession, *, secure: bool) -> None:
    # The cookie lives exactly as long as the session can: its absolute expiry.
    response.set_cookie(
        COOKIE,
        issued.id,
        expires=issued.info.absolute_expires_at,
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
