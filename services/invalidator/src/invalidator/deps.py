"""The lifespan's `InvalidatorState`, reached by routes through `Depends`."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Request

from invalidator.state import InvalidatorState

# The lifespan state's key: `request.state.invalidator`.
STATE_KEY: Final = "invalidator"


async def get_state(request: Request) -> InvalidatorState:
    state = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(state, InvalidatorState):
        raise TypeError("the invalidator's lifespan has not started: no state in the scope")
    return state


State = Annotated[InvalidatorState, Depends(get_state)]
