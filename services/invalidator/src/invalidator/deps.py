"""The lifespan's `InvalidatorState`, reached by routes through `Depends`."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Request

from invalidator.state import InvalidatorState
from shared.lifespan import StateSlot

# Where the lifespan puts the state: `request.state.invalidator`.
SLOT: Final = StateSlot("invalidator", InvalidatorState)


async def get_state(request: Request) -> InvalidatorState:
    return SLOT.of(request.scope)


State = Annotated[InvalidatorState, Depends(get_state)]
