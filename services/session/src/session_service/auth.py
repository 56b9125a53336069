"""Service-to-service authentication: `Authorization: Bearer $SERVICE_TOKEN`.

Pure ASGI, so it guards every path (docs and metrics too) except `/health`, which
orchestrators probe without credentials. The scheme is matched case-insensitively (RFC 7235:
`bearer`, `BEARER` are the same scheme); the token is compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.http import error_response

OPEN_PATHS: Final = frozenset({"/health"})


class ServiceTokenMiddleware:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "UNAUTHORIZED",
            "a valid service token is required",
            None,
            {"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        presented = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = credentials.strip()
                break
        return hmac.compare_digest(presented, self._expected)
