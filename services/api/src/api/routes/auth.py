"""`/v1/auth/*` and `/v1/users/me`: register, sign in, sign out, who am I.

The `auth` rate policy on register and login is applied by the rate-limit middleware.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.auth.cookies import clear_session_cookie, session_cookie, set_session_cookie
from api.auth.deps import AUTH_ERRORS, SessionsClient, SignedIn, guarded, unauthorized
from api.deps import State, Users
from api.errors import UserNotFoundError
from api.schemas import Login, LoginOut, UserCreate, UserOwn
from shared.http import ApiError, JsonResponse, error_responses

router = APIRouter(tags=["auth"])


@router.post(
    "/v1/auth/register",
    status_code=201,
    response_model=UserOwn,
    responses=error_responses(409, 422, 429),
)
async def register(body: UserCreate, users: Users) -> Response:
    return Response(await users.create(body), status_code=201, media_type="application/json")


@router.post(
    "/v1/auth/login", response_model=LoginOut, responses=error_responses(401, 422, 429, 503)
)
async def login(
    body: Login, request: Request, users: Users, client: SessionsClient, state: State
) -> Response:
    """Sign in: a new session and its cookie. A session the request carried is ended.

    No answer depends on whether the password was right unless the session service can
    issue a session: it is checked before argon2 is spent (an open breaker answers 503 at
    once) and, for wrong credentials, probed again afterwards, so a refused login says 503
    whatever the password while sessions cannot be made (no password oracle).
    """
    await guarded(client.ensure_available())
    found = await users.authenticate(body.email, body.password)
    if found is None:
        await guarded(client.probe())
        # One answer for an unknown email and a wrong password.
        raise ApiError(401, "INVALID_CREDENTIALS", "email or password is wrong")
    user_id, document = found
    issued = await guarded(client.create(user_id))
    if (carried := session_cookie(request)) is not None:
        # No fixation: whatever id the browser brought, signed in or not, is dead now.
        await guarded(client.destroy(carried))
    out = LoginOut(
        user=UserOwn.model_validate(document),
        expires_at=issued.info.expires_at,
        absolute_expires_at=issued.info.absolute_expires_at,
    )
    response = JsonResponse(out.model_dump(mode="json"))
    set_session_cookie(response, issued, secure=state.settings.secure_cookies)
    return response


@router.post(
    "/v1/auth/logout", status_code=204, response_class=Response, responses=error_responses(503)
)
async def logout(request: Request, client: SessionsClient, state: State) -> Response:
    """End the session (if any) and clear the cookie; signing out twice is fine."""
    if (carried := session_cookie(request)) is not None:
        await guarded(client.destroy(carried))
    response = Response(status_code=204)
    clear_session_cookie(response, secure=state.settings.secure_cookies)
    return response


@router.get("/v1/users/me", response_model=UserOwn, tags=["users"], responses=AUTH_ERRORS)
async def me(signed: SignedIn, users: Users) -> Response:
    """The signed-in user, own view (with the email)."""
    try:
        data = await users.own(signed.user_id)
    except UserNotFoundError:
        # Deleted a moment ago; its sessions are being revoked: not signed in.
        raise unauthorized() from None
    return Response(data, media_type="application/json")
