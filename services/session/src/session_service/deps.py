"""FastAPI dependencies: the lifespan's `SessionState`, reached through `Depends`."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Request

from session_service.state import SessionState
from session_service.usecases import Sessions
from shared.lifespan import StateSlot

# Where the lifespan puts the state: `request.state.session`.
SLOT: Final = StateSlot("session", SessionState)


async def get_state(request: Request) -> SessionState:
    return SLOT.of(request.scope)


State = Annotated[SessionState, Depends(get_state)]


async def get_sessions(request: Request) -> Sessions:
    return (await get_state(request)).sessions


SessionsDep = Annotated[Sessions, Depends(get_sessions)]
