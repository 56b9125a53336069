"""The rate-limit middleware (pure ASGI), the `user` policy hook, and the refusal shapes.

The middleware checks the request's per-IP policies before the app runs and adds the
X-RateLimit-*, RateLimit-Policy and RateLimit headers of every policy applied to the
response on its way out — a refusal included. The client's IP is the peer's, or the first
untrusted `X-Forwarded-For` hop when the peer is in TRUSTED_PROXIES (`shared.limiter.http`).
A refusal is an `ApiError` built in one place: 429 `RATE_LIMITED` with Retry-After, or 503
`SERVICE_UNAVAILABLE` for a fail-closed policy while Redis is down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import api_state
from api.ratelimit.guard import Guard, RateLimitUnavailableError
from api.ratelimit.policies import EXEMPT_PATHS, Policies
from shared.http import ApiError, error_response
from shared.keys import user_id
from shared.limiter import Decision, Policy
from shared.limiter.http import client_ip, rate_limit_raw_headers
from shared.settings import Network

SCOPE_KEY: Final = "api.ratelimit"


def limited(policy: Policy, decision: Decision) -> ApiError:
    """The 429 for a denied check (the headers come from the middleware)."""
    message = (
        f"rate limit {policy.name!r} exceeded ({policy.limit} per {policy.period:g}s); "
        f"retry in {decision.retry_after_seconds}s"
    )
    details = {"policy": policy.name, "retry_after": decision.retry_after_seconds}
    return ApiError(429, "RATE_LIMITED", message, details)


def unavailable(exc: RateLimitUnavailableError) -> ApiError:
    """The 503 of a fail-closed policy while Redis is down."""
    retry = {"Retry-After": str(max(1, math.ceil(exc.retry_in)))}
    return ApiError(503, "SERVICE_UNAVAILABLE", str(exc), {"policy": exc.policy.name}, retry)


@dataclass(slots=True)
class RequestLimits:
    """One request's decisions; the middleware turns them into headers at response start."""

    guard: Guard
    policies: Policies
    applied: list[tuple[Policy, Decision]] = field(default_factory=list)

    async def enforce(self, policy: Policy, identifier: str) -> None:
        """Check `policy`; raise the refusal (`ApiError`) when it does not admit."""
        try:
            decision = await self.guard.check(policy, identifier)
        except RateLimitUnavailableError as exc:
            raise unavailable(exc) from None
        self.applied.append((policy, decision))
        if not decision.allowed:
            raise limited(policy, decision)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return rate_limit_raw_headers(self.applied)


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, policies: Policies, trusted: Sequence[Network]) -> None:
        self.app = app
        self.policies = policies
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        guard = api_state(scope).guard
        if guard is None:  # RATE_LIMIT_ENABLED=false
            await self.app(scope, receive, send)
            return
        limits = RequestLimits(guard, self.policies)
        scope[SCOPE_KEY] = limits

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *limits.headers()]
            await send(message)

        ip = client_ip(scope, self.trusted)
        try:
            for policy in self.policies.for_request(scope["method"], scope["path"]):
                await limits.enforce(policy, ip)
        except ApiError as refusal:
            response = error_response(
                refusal.status, refusal.code, refusal.message, refusal.details, refusal.headers
            )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


async def enforce_user_limit(request: Request, uid: UUID | str) -> None:
    """The `user` policy for a signed-in user; the auth dependency calls it.

    Raises the refusal (`ApiError` 429, or 503 when Redis is down and `user` fails closed).
    A no-op when rate limiting is off or the route is exempt; headers come from the
    middleware.
    """
    limits = request.scope.get(SCOPE_KEY)
    if isinstance(limits, RequestLimits):
        await limits.enforce(limits.policies.user, user_id(uid))
