"""Rate limiting for the api: policies, client identity, pure ASGI middleware, headers.

Policies (docs/architecture.md): `default` per client IP on every route but `/health` and `/metrics`
(probes must never be throttled into a restart), `auth` per client IP on POST
`/v1/auth/register` and `/v1/auth/login` (on top of `default`), `user` per signed-in user —
the auth dependency calls `enforce_user_limit(request, user_id)` once it knows the user.

Client IP and headers: `shared.limiter.http` (X-Forwarded-For only from TRUSTED_PROXIES;
X-RateLimit-*, RateLimit-Policy, RateLimit on every limited response; a 429 adds Retry-After
and the error shape with code `RATE_LIMITED`).

Redis failure: each policy fails open (default: the request passes, counted as `degraded`)
or closed (RATE_LIMIT_FAIL_CLOSED: 503 in the error shape). One circuit breaker guards the
limiter, so once it is open a dead Redis costs no timeout per request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.config import ApiSettings
from shared.breaker import CircuitBreaker, State
from shared.connections import UNAVAILABLE_ERRORS
from shared.errors import CircuitOpenError
from shared.http import ApiError, error_response
from shared.keys import Keys, user_id
from shared.limiter import Decision, DenialCache, Policy, RateLimiter
from shared.limiter.http import client_ip, rate_limit_raw_headers
from shared.metrics import breaker_metrics
from shared.settings import Network

logger = logging.getLogger(__name__)

SCOPE_KEY = "api.ratelimit"
# POST /v1/users creates an account exactly as register does (an argon2 hash, a 409 that
# tells whether an email is taken): it gets the same policy.
AUTH_ROUTES = frozenset(
    {("POST", "/v1/auth/register"), ("POST", "/v1/auth/login"), ("POST", "/v1/users")}
)
EXEMPT_PATHS = frozenset({"/health", "/metrics"})
# Anything that means "no answer from the limiter": the request is then judged fail-open/closed.
REDIS_DOWN: tuple[type[BaseException], ...] = (CircuitOpenError, RedisError, *UNAVAILABLE_ERRORS)


@dataclass(frozen=True, slots=True)
class Policies:
    default: Policy
    auth: Policy
    user: Policy
    fail_closed: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Policies:
        algorithm = settings.rate_limit_algorithm
        return cls(
            default=Policy.from_spec("default", settings.rate_limit_default, algorithm),
            auth=Policy.from_spec("auth", settings.rate_limit_auth, algorithm),
            user=Policy.from_spec("user", settings.rate_limit_user, algorithm),
            fail_closed=frozenset(settings.rate_limit_fail_closed),
        )


class RateLimitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "ratelimit_decisions",
            "rate-limit decisions by policy: allowed, limited, degraded (Redis unavailable)",
            ["policy", "decision"],
            registry=registry,
        )
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, policy: str, decision: str) -> None:
        # Bound children, cached: labels() takes a lock and hashes on every call.
        child = self._children.get((policy, decision))
        if child is None:
            child = self._children[(policy, decision)] = self.decisions.labels(policy, decision)
        child.inc()


class RateLimitUnavailableError(Exception):
    """Redis is unavailable and the policy fails closed."""

    def __init__(self, policy: Policy, retry_in: float) -> None:
        super().__init__(f"rate limiting for {policy.name!r} is unavailable")
        self.policy = policy
        self.retry_in = retry_in


class Guard:
    """The limiter behind a circuit breaker, with fail-open/closed and metrics per policy."""

    def __init__(
        self,
        redis: Callable[[], Redis],
        keys: Keys,
        breaker: CircuitBreaker,
        metrics: RateLimitMetrics,
        fail_closed: frozenset[str],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._limiter: RateLimiter | None = None
        self.denials = DenialCache()
        self.breaker = breaker
        self.metrics = metrics
        self.fail_closed = fail_closed

    @property
    def limiter(self) -> RateLimiter:
        # Built on first use: the client exists only once the app's lifespan has started.
        client = self._redis()
        if self._limiter is None or self._limiter.redis is not client:
            self._limiter = RateLimiter(client, self._keys, denials=self.denials)
        return self._limiter

    async def check(self, policy: Policy, identifier: str) -> Decision | None:
        """The decision; None when Redis is unavailable and the policy fails open."""
        limiter = self.limiter
        breaker = self.breaker
        try:
            if breaker.state is State.CLOSED:
                # Fast path of every request (no trial slot to manage while closed).
                decision = await _counted(breaker, limiter.check(policy, identifier))
            else:
                decision = await breaker.call(lambda: limiter.check(policy, identifier))
        except REDIS_DOWN as exc:
            self._degraded(policy, exc)
            return None
        self.metrics.count(policy.name, "allowed" if decision.allowed else "limited")
        return decision

    def _degraded(self, policy: Policy, exc: BaseException) -> None:
        if not isinstance(exc, CircuitOpenError):
            logger.warning(
                "rate limiter: Redis failed (%s) for %s", type(exc).__name__, policy.name
            )
        self.metrics.count(policy.name, "degraded")
        if policy.name in self.fail_closed:
            raise RateLimitUnavailableError(policy, self.breaker.retry_in())


@dataclass(slots=True)
class RequestLimits:
    """One request's decisions; the middleware turns them into headers at response start."""

    guard: Guard
    policies: Policies
    applied: list[tuple[Policy, Decision]] = field(default_factory=list)

    async def check(self, policy: Policy, identifier: str) -> Decision | None:
        decision = await self.guard.check(policy, identifier)
        if decision is not None:
            self.applied.append((policy, decision))
        return decision

    def headers(self) -> list[tuple[bytes, bytes]]:
        return rate_limit_raw_headers(self.applied)


class RateLimitMiddleware:
    """Pure ASGI: applies `default` (and `auth`) before the app, headers on the way out."""

    def __init__(
        self, app: ASGIApp, guard: Guard, policies: Policies, trusted: Sequence[Network]
    ) -> None:
        self.app = app
        self.guard = guard
        self.policies = policies
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        limits = RequestLimits(self.guard, self.policies)
        scope[SCOPE_KEY] = limits

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *limits.headers()]
            await send(message)

        refusal = await self._refusal(scope, limits)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _refusal(self, scope: Scope, limits: RequestLimits) -> ASGIApp | None:
        ip = client_ip(scope, self.trusted)
        policies = [self.policies.default]
        if (scope["method"], scope["path"]) in AUTH_ROUTES:
            policies.append(self.policies.auth)
        for policy in policies:
            try:
                decision = await limits.check(policy, ip)
            except RateLimitUnavailableError as exc:
                return unavailable_response(exc)
            if decision is not None and not decision.allowed:
                return limited_response(policy, decision)
        return None


def limited_response(policy: Policy, decision: Decision) -> ASGIApp:
    message = (
        f"rate limit {policy.name!r} exceeded ({policy.limit} per {policy.period:g}s); "
        f"retry in {decision.retry_after_seconds}s"
    )
    details = {"policy": policy.name, "retry_after": decision.retry_after_seconds}
    return error_response(429, "RATE_LIMITED", message, details)


def unavailable_response(exc: RateLimitUnavailableError) -> ASGIApp:
    return error_response(503, "SERVICE_UNAVAILABLE", str(exc), None, _retry_header(exc))


def _retry_header(exc: RateLimitUnavailableError) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(exc.retry_in)))}


async def _counted(breaker: CircuitBreaker, check: Awaitable[Decision]) -> Decision:
    try:
        decision = await check
    except breaker.failures:
        breaker.record_failure()
        raise
    breaker.record_success()
    return decision


async def enforce_user_limit(request: Request, uid: UUID | str) -> None:
    """The `user` policy for a signed-in user; call it from the auth dependency.

    Raises `ApiError` 429 (`RATE_LIMITED`) or, when Redis is down and `user` fails closed,
    503. A no-op when rate limiting is off or the route is exempt. Headers are added by the
    middleware.
    """
    limits = request.scope.get(SCOPE_KEY)
    if not isinstance(limits, RequestLimits):
        return
    policy = limits.policies.user
    try:
        decision = await limits.check(policy, user_id(uid))
    except RateLimitUnavailableError as exc:
        raise ApiError(503, "SERVICE_UNAVAILABLE", str(exc), None, _retry_header(exc)) from None
    if decision is not None and not decision.allowed:
        message = f"rate limit 'user' exceeded; retry in {decision.retry_after_seconds}s"
        details = {"policy": policy.name, "retry_after": decision.retry_after_seconds}
        raise ApiError(429, "RATE_LIMITED", message, details)


def install_rate_limiting(
    app: FastAPI, settings: ApiSettings, redis: Callable[[], Redis], registry: CollectorRegistry
) -> None:
    """Add the middleware (if RATE_LIMIT_ENABLED); `redis` returns the started data client."""
    if not settings.rate_limit_enabled:
        return
    breaker = CircuitBreaker(
        "ratelimit",
        failure_threshold=settings.breaker_failure_threshold,
        reset_timeout=settings.breaker_reset_timeout,
        failures=UNAVAILABLE_ERRORS,
        on_change=breaker_metrics(registry).hook("ratelimit"),
    )
    policies = Policies.from_settings(settings)
    metrics = RateLimitMetrics(registry)
    guard = Guard(redis, Keys(settings.key_prefix), breaker, metrics, policies.fail_closed)
    app.add_middleware(
        RateLimitMiddleware, guard=guard, policies=policies, trusted=settings.trusted_proxies
    )
