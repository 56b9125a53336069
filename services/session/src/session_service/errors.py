"""Errors of the session service, and the one place that maps them to HTTP.

SessionError
├── SessionNotFoundError      unknown, expired, revoked or malformed id (never says which)
└── SessionStoreUnavailable   Redis does not answer: sessions fail closed (503)
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from shared.http import JsonResponse, error_response

RETRY_AFTER = {"Retry-After": "1"}


class SessionError(Exception):
    """Root of the session service's errors."""


class SessionNotFoundError(SessionError):
    def __init__(self) -> None:
        # No id in the message: errors may be logged, and ids are secrets.
        super().__init__("session not found")


class SessionStoreUnavailable(SessionError):  # noqa: N818 - reads as a state, like HTTP 503
    def __init__(self, reason: str) -> None:
        super().__init__(f"session store unavailable: {reason}")
        self.reason = reason


async def _not_found(_: Request, exc: Exception) -> JsonResponse:
    return error_response(404, "SESSION_NOT_FOUND", "session not found or expired")


async def _unavailable(_: Request, exc: Exception) -> JsonResponse:
    # Fail closed: without Redis no session can be checked, so none is valid.
    return error_response(
        503, "SESSION_STORE_UNAVAILABLE", "the session store is unavailable", None, RETRY_AFTER
    )


def install_session_errors(app: FastAPI) -> None:
    app.add_exception_handler(SessionNotFoundError, _not_found)
    app.add_exception_handler(SessionStoreUnavailable, _unavailable)
