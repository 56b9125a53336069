"""HTTP conventions every service shares: the error shape, its handlers, request ids.

Every error answers `{"error": {"code": "...", "message": "...", "details": ...}}`.
Services raise `ApiError` (or map their domain errors to it in one place); anything
unexpected is logged with its traceback and answered as a clean 500 in the same shape.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JsonResponse(JSONResponse):
    """A JSON response encoded with orjson (FastAPI's ORJSONResponse is deprecated).

    A `JSONResponse` subclass, not a plain `Response`: FastAPI writes a route's
    `response_model` into the OpenAPI document only for JSON response classes (with a plain
    `Response` as the default class every body was documented as a string)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """An error with its HTTP status and machine-readable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status_code=status, headers=headers)


def status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape for these statuses."""
    return {
        status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase}
        for status in statuses
    }


async def _api_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_TEMPLATE_PARAM = re.compile(r"\{[^}/]+\}")


def allowed_methods(request: Request) -> tuple[list[str], bool]:
    """The methods of the request's resource, and whether it is a fixed path.

    RFC 9110: `Allow` lists the resource's methods, not one route's. A resource is a path of
    the app's OpenAPI document (what clients are told); a fixed path wins over a template:
    `/v1/users/me` is its own resource, not `/v1/users/{user_id}` with the id "me". A path
    the document does not list (the docs pages) is asked of the routes themselves."""
    path = request.url.path
    fixed: set[str] = set()
    templated: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = _TEMPLATE_PARAM.sub(
            "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
        )
        if re.fullmatch(pattern, path):
            methods = {method.upper() for method in operations}
            (templated if _TEMPLATE_PARAM.search(template) else fixed).update(methods)
    if fixed or templated:
        return sorted(fixed or templated), bool(fixed)
    routes = request.app.router.routes
    found = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return found, False


def _method_not_allowed(request: Request, methods: list[str]) -> JsonResponse:
    message = f"{request.method} is not allowed here; allowed: {', '.join(methods)}"
    return error_response(
        405, "METHOD_NOT_ALLOWED", message, {"allowed": methods}, {"Allow": ", ".join(methods)}
    )


async def _http_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return _method_not_allowed(request, allowed_methods(request)[0])
    headers = dict(exc.headers) if exc.headers else None
    return error_response(
        exc.status_code, status_code_name(exc.status_code), str(exc.detail), None, headers
    )


async def _validation_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, RequestValidationError)
    methods, fixed = allowed_methods(request)
    if fixed and request.method not in methods:
        # A template route took a fixed path's request (PATCH /v1/users/me): its "bad id" is
        # really a method the fixed resource does not have.
        return _method_not_allowed(request, methods)
    details: list[dict[str, Any]] = []
    for err in exc.errors():
        detail = {"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
        if detail not in details:  # a parameter a dependency shares is validated twice
            details.append(detail)
    return error_response(422, "VALIDATION_ERROR", "the request is not valid", details)


async def _too_large(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, RequestTooLargeError)
    return too_large_response(exc.max_bytes)


async def _unexpected(_: Request, exc: Exception) -> JsonResponse:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL", "internal server error")


def document_common_errors(
    app: FastAPI, extra: Callable[[str, str, dict[str, Any]], None] | None = None
) -> None:
    """Complete the OpenAPI document with the answers every operation can give: 400 (a body
    that is not UTF-8 JSON) and 413 (a body over MAX_REQUEST_BYTES) on every operation with a
    body; `extra(path, method, operation)` adds a service's own (e.g. 429)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if "requestBody" in operation:
                    document_error(operation, 400, "the body is not UTF-8 JSON")
                    document_error(operation, 413, "the body is larger than MAX_REQUEST_BYTES")
                if extra is not None:
                    extra(path, method, operation)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise


def document_error(operation: dict[str, Any], status: int, description: str) -> None:
    """Add an error answer in the common shape, unless the operation documents it already."""
    operation.setdefault("responses", {}).setdefault(
        str(status),
        {
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        },
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestTooLargeError, _too_large)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


class RequestIdMiddleware:
    """Pure ASGI: take or make `X-Request-ID`, expose it to logs, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or uuid.uuid4().hex
        token = logs.request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text: str = value.decode("latin-1")
            # Only echo ids that are safe in a log line and a header.
            if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_." for c in text):
                return text
    return None


class RequestTooLargeError(StarletteHTTPException):
    """A request body over the bound. An `HTTPException`, so FastAPI's body reader lets it
    through to the handler (any other error while reading becomes its generic 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


def too_large_response(max_bytes: int) -> JsonResponse:
    message = f"the request body is larger than {max_bytes} bytes"
    # Close: the rest of the body is never read, so the connection cannot be reused.
    headers = {"Connection": "close"}
    return error_response(413, "PAYLOAD_TOO_LARGE", message, {"max_bytes": max_bytes}, headers)


class BodyLimitMiddleware:
    """Pure ASGI: no request body larger than `max_bytes` is ever read into memory.

    A declared `Content-Length` over the bound is answered 413 at once, its body unread. A
    streamed (chunked) body is counted as it arrives: the chunk that crosses the bound raises
    `RequestTooLargeError` inside the app's `receive()`, so at most `max_bytes` plus one
    chunk is ever buffered. Starlette's own `RequestBodyLimitMiddleware` answers in plain
    text and only once the app reads; this one answers in the common error shape, at once.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await too_large_response(self.max_bytes)(scope, receive, send)
            return
        seen = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise RequestTooLargeError(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except RequestTooLargeError:
            # An app that does not map the error itself (FastAPI apps do, via the handler).
            if started:
                raise
            await too_large_response(self.max_bytes)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (h11, httptools) refuses a malformed length itself
    return None
