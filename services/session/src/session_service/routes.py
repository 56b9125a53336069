"""HTTP handlers: parse, call one use case, shape the answer."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Response

from session_service.deps import SessionsDep
from session_service.schemas import (
    CreateSession,
    IssuedSessionBody,
    Revoked,
    Session,
    SessionList,
    SessionSummary,
)
from shared.http import error_responses

router = APIRouter(prefix="/v1", tags=["sessions"], responses=error_responses(401, 503))
_404 = error_responses(404)


@router.post("/sessions", status_code=201, responses=error_responses(422))
async def create_session(
    body: Annotated[CreateSession, Body()], sessions: SessionsDep
) -> IssuedSessionBody:
    """Start a session for a user; the id is in this response and nowhere else."""
    return IssuedSessionBody.issued(await sessions.create(body.user_id, body.data))


@router.get("/sessions/{session_id}", responses=_404)
async def get_session(session_id: str, sessions: SessionsDep) -> Session:
    """The live session, or 404 when it is unknown, expired or revoked."""
    return Session.of(await sessions.get(session_id))


@router.post("/sessions/{session_id}/refresh", responses=_404)
async def refresh_session(session_id: str, sessions: SessionsDep) -> Session:
    """Extend the idle expiry; it never passes `absolute_expires_at`."""
    return Session.of(await sessions.refresh(session_id))


@router.post("/sessions/{session_id}/rotate", status_code=201, responses=_404)
async def rotate_session(session_id: str, sessions: SessionsDep) -> IssuedSessionBody:
    """Replace the id (login, privilege change): the old id is gone, user and data kept."""
    return IssuedSessionBody.issued(await sessions.rotate(session_id))


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response)
async def destroy_session(session_id: str, sessions: SessionsDep) -> None:
    """End the session; ending one that does not exist is not an error."""
    await sessions.destroy(session_id)


@router.get("/users/{user_id}/sessions", responses=error_responses(422))
async def list_user_sessions(user_id: UUID, sessions: SessionsDep) -> SessionList:
    """The user's live sessions, without ids; expired ones are pruned on the way."""
    records = await sessions.list_for_user(user_id)
    return SessionList(items=[SessionSummary.summary(r) for r in records])


@router.delete("/users/{user_id}/sessions", responses=error_responses(422))
async def revoke_user_sessions(user_id: UUID, sessions: SessionsDep) -> Revoked:
    """End every session of the user."""
    return Revoked(revoked=await sessions.revoke_all(user_id))
