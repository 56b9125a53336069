"""FastAPI dependencies as `Annotated` aliases, so routes read `users: Users`.

Everything comes from the one `ApiState` the lifespan yields (`api.state`), which Starlette
hands to every request as lifespan state. Not `dependency_overrides`: FastAPI re-inspects an
override's signature on every request, which cost more than the cache hit it serves.
Dependencies are `async def` because FastAPI runs a plain `def` dependency in a thread.
"""

from __future__ import annotations

from typing import Annotated, Final
from uuid import UUID

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator
from starlette.types import Scope

from api.state import ApiState
from api.usecases import UserService
from shared.keys import USER_ID_PATTERN, user_id
from shared.lifespan import StateSlot

# Where the lifespan puts the state: `request.state.api`, `scope["state"]["api"]`.
SLOT: Final = StateSlot("api", ApiState)
STATE_KEY: Final = SLOT.key


def api_state(scope: Scope) -> ApiState:
    """The request's `ApiState` (for pure ASGI middleware, which has only the scope)."""
    return SLOT.of(scope)


async def get_state(request: Request) -> ApiState:
    return api_state(request.scope)


State = Annotated[ApiState, Depends(get_state)]


async def get_users(request: Request) -> UserService:
    return api_state(request.scope).users


Users = Annotated[UserService, Depends(get_users)]


def _spelled_as_ids_are(value: object) -> object:
    # Hyphenated or 32 hex digits; braces and `urn:uuid:` (which UUID() takes) are refused,
    # as they are for keys: one rule, `shared.keys.user_id`.
    return UUID(user_id(value)) if isinstance(value, str) else value


UserIdPath = Annotated[
    UUID,
    BeforeValidator(_spelled_as_ids_are),
    Path(
        description="the user's id: a UUID, hyphenated or as 32 hex digits",
        json_schema_extra={"pattern": USER_ID_PATTERN},
    ),
]
