"""`/v1/users`: thin handlers — parse, call one use case, answer. `X-Cache` on reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from api.auth.deps import OwnAccount
from api.deps import UserIdPath, Users
from api.schemas import UserCreate, UserOwn, UserPage, UserPublic, UserUpdate
from shared.cache import Lookup
from shared.http import error_responses

router = APIRouter(prefix="/v1/users", tags=["users"])


def _cached(found: Lookup) -> Response:
    # The cached bytes are the response: no decode and re-encode on a hit.
    headers = {"X-Cache": "HIT" if found.hit else "MISS"}
    return Response(found.data, media_type="application/json", headers=headers)


def _json(data: bytes, status: int = 200) -> Response:
    return Response(data, status_code=status, media_type="application/json")


@router.post(
    "",
    status_code=201,
    response_model=UserOwn,
    responses=error_responses(409, 422),
)
async def create_user(body: UserCreate, users: Users) -> Response:
    return _json(await users.create(body), 201)


@router.get(
    "/{user_id}",
    response_model=UserPublic,
    responses=error_responses(404, 422),
)
async def get_user(user_id: UserIdPath, users: Users) -> Response:
    return _cached(await users.get(user_id))


@router.get("", response_model=UserPage, responses=error_responses(422))
async def list_users(
    users: Users,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    return _cached(await users.list(page, limit))


@router.patch(
    "/{user_id}",
    response_model=UserOwn,
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def update_user(
    user_id: UserIdPath, body: UserUpdate, users: Users, me: OwnAccount
) -> Response:
    # A password change keeps this session (the event says so) and rotates its id.
    response = _json(await users.update(user_id, body, keep_session=me.session_hash))
    if body.password is not None:
        await me.renew(response)
    return response


@router.delete(
    "/{user_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422, 503),
)
async def delete_user(user_id: UserIdPath, users: Users, me: OwnAccount) -> Response:
    await users.delete(user_id)
    response = Response(status_code=204)
    await me.sign_out(response)  # this session at once; the others by the user.deleted event
    return response
