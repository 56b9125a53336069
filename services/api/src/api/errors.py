"""The api's domain errors and the one place that maps them to HTTP.

UserError
├── UserNotFoundError    no user with that id (404)
└── EmailTakenError      another user has that email (409)
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from shared.http import JsonResponse, error_response


class UserError(Exception):
    status = 400
    code = "BAD_REQUEST"


class UserNotFoundError(UserError):
    status = 404
    code = "NOT_FOUND"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"no user {user_id}")
        self.user_id = user_id


class EmailTakenError(UserError):
    status = 409
    code = "EMAIL_TAKEN"

    def __init__(self) -> None:
        super().__init__("that email is already registered")


async def _user_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, UserError)
    return error_response(exc.status, exc.code, str(exc))


def install_domain_errors(app: FastAPI) -> None:
    app.add_exception_handler(UserError, _user_error)
