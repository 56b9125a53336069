"""FastAPI dependencies: the lifespan's `SessionState`, reached through `Depends`."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Request

from session_service.state import SessionState
from session_service.usecases import Sessions

# The lifespan state's key: `request.state.session`.
STATE_KEY: Final = "session"


async def get_state(request: Request) -> SessionState:
    state = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(state, SessionState):
        raise TypeError("the session service's lifespan has not started: no state in the scope")
    return state


State = Annotated[SessionState, Depends(get_state)]


async def get_sessions(request: Request) -> Sessions:
    return (await get_state(request)).sessions


SessionsDep = Annotated[Sessions, Depends(get_sessions)]
