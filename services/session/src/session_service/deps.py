"""FastAPI dependencies: the lifespan's objects, reached through `Depends`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from session_service.usecases import Sessions


def _sessions(request: Request) -> Sessions:
    # Set by the lifespan's state (main.lifespan), not a module global.
    sessions: Sessions = request.state.sessions
    return sessions


SessionsDep = Annotated[Sessions, Depends(_sessions)]
