"""The session service over HTTP: one pooled keep-alive client per api process.

Sessions fail closed: a transport error, a timeout, a 5xx or a refused service token is
`SessionServiceUnavailableError` (the caller answers 503), never "no session" and never
"signed in". A circuit breaker turns a dead service into an immediate 503 instead of a
timeout per request. Ids are checked for shape before they become part of a URL path, so a
cookie can never steer a request to another endpoint (`../users/<id>/sessions`).
Every call is counted by outcome (`session_service_requests_total{outcome}`, see
`api.metrics.SESSION_OUTCOMES`) and the breaker's state is exported as
`circuit_breaker_open{breaker="session-service"}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import httpx

from api.config import ApiSettings
from api.metrics import ApiMetrics, SessionServiceMetrics
from shared.breaker import CircuitBreaker, State
from shared.errors import CircuitOpenError
from shared.sessionids import well_formed
from shared.tracing import outgoing_headers

_BREAKER: Final = "session-service"


class SessionServiceUnavailableError(Exception):
    """The session service did not give a usable answer."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    user_id: UUID
    expires_at: datetime
    absolute_expires_at: datetime

    @classmethod
    def of(cls, body: dict[str, Any]) -> SessionInfo:
        return cls(
            user_id=UUID(body["user_id"]),
            expires_at=datetime.fromisoformat(body["expires_at"]),
            absolute_expires_at=datetime.fromisoformat(body["absolute_expires_at"]),
        )


@dataclass(frozen=True, slots=True)
class IssuedSession:
    id: str
    info: SessionInfo


class SessionClient:
    def __init__(
        self,
        settings: ApiSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: ApiMetrics | None = None,
        *,
        propagate: bool = False,
    ):
        token = settings.service_token.get_secret_value()
        self._propagate = propagate  # send the current `traceparent` (tracing on)
        self._http = httpx.AsyncClient(
            base_url=settings.session_service,
            timeout=settings.session_service_timeout,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            # Every authenticated request makes one call: keep connections warm.
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
            transport=transport,
        )
        self._breaker = CircuitBreaker.from_settings(
            _BREAKER,
            settings,
            failures=(SessionServiceUnavailableError,),
            on_change=metrics.breakers.hook(_BREAKER) if metrics else None,
        )
        self._outcomes = metrics.session_service if metrics else SessionServiceMetrics(None)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ensure_available(self) -> None:
        """Raise at once, without I/O, while the breaker knows the service is down."""
        if self._breaker.state is State.OPEN:
            self._outcomes.count("circuit_open")
            raise SessionServiceUnavailableError("session service circuit is open")

    async def probe(self) -> None:
        """One cheap round trip (`GET /health`, through the breaker); raises when it fails."""
        await self._call("GET", "/health")

    async def create(self, user_id: UUID) -> IssuedSession:
        body = await self._call("POST", "/v1/sessions", {"user_id": str(user_id)})
        assert body is not None  # 201 or an error
        return IssuedSession(body["id"], SessionInfo.of(body))

    async def get(self, session_id: str) -> SessionInfo | None:
        body = await self._on(session_id, "GET", "")
        return None if body is None else SessionInfo.of(body)

    async def refresh(self, session_id: str) -> SessionInfo | None:
        body = await self._on(session_id, "POST", "/refresh")
        return None if body is None else SessionInfo.of(body)

    async def rotate(self, session_id: str) -> IssuedSession | None:
        body = await self._on(session_id, "POST", "/rotate")
        return None if body is None else IssuedSession(body["id"], SessionInfo.of(body))

    async def destroy(self, session_id: str) -> None:
        await self._on(session_id, "DELETE", "")

    async def _on(self, session_id: str, method: str, action: str) -> dict[str, Any] | None:
        # A malformed id is no session, and must never become part of a path.
        if not well_formed(session_id):
            return None
        return await self._call(method, f"/v1/sessions/{session_id}{action}")

    async def _call(
        self, method: str, path: str, json: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The JSON body; None on 404 (and 204); unavailable on anything unusable."""
        try:
            response = await self._breaker.call(self._send, method, path, json)
        except CircuitOpenError as exc:
            self._outcomes.count("circuit_open")
            raise SessionServiceUnavailableError(str(exc)) from None
        if response.status_code in (204, 404):
            return None
        body: dict[str, Any] = response.json()
        return body

    async def _send(self, method: str, path: str, json: dict[str, Any] | None) -> httpx.Response:
        try:
            # Traced, the session service's request span continues the caller's trace.
            headers = outgoing_headers() if self._propagate else None
            response = await self._http.request(method, path, json=json, headers=headers)
        except httpx.TransportError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            self._outcomes.count("timeout" if timed_out else "unreachable")
            raise SessionServiceUnavailableError(type(exc).__name__) from None
        status = response.status_code
        if status >= 500 or status in (401, 403):
            # 401/403: our service token is wrong — a configuration fault, not "signed out".
            self._outcomes.count("error")
            raise SessionServiceUnavailableError(f"session service answered {status}")
        if status >= 400 and status != 404:
            self._outcomes.count("error")
            raise SessionServiceUnavailableError(f"session service refused: {status}")
        self._outcomes.count("not_found" if status == 404 else "ok")
        return response
