"""One rate-limit check: Redis when it answers, this process when it does not.

`Guard.check(policy, identifier)`:

1. a denial the in-process denial cache still holds is answered at once — also while the
   breaker is open, so a client refused a moment ago stays refused when Redis goes away;
2. otherwise the shared limiter: one `EVALSHA` through a circuit breaker (once it opens, a
   dead Redis costs no timeout per request);
3. when Redis failed or the breaker is open: a policy in RATE_LIMIT_FAIL_CLOSED raises
   `RateLimitUnavailableError` (the caller answers 503); any other asks the in-process
   `LocalLimiter`, the same policy on this instance's own counts — N instances admit at most
   N times a policy, never everything.

Metrics: `ratelimit_decisions_total{policy,decision}`, decision one of allowed / limited
(Redis, or a cached denial), fallback_allowed / fallback_limited (in-process), unavailable
(refused with 503); `ratelimit_fallback_active` is 1 from the first check Redis could not
answer until the next one it does.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from api.config import ApiSettings
from api.metrics import RateLimitMetrics
from shared.breaker import CircuitBreaker
from shared.connections import UNAVAILABLE_ERRORS, RedisClient
from shared.errors import CircuitOpenError
from shared.keys import Keys
from shared.limiter import Decision, DenialCache, Policy, RateLimiter
from shared.limiter.local import LocalLimiter
from shared.metrics import breaker_metrics

logger = logging.getLogger(__name__)

# Anything that means "no answer from the shared limiter".
REDIS_DOWN: tuple[type[BaseException], ...] = (CircuitOpenError, RedisError, *UNAVAILABLE_ERRORS)
BREAKER = "ratelimit"


class RateLimitUnavailableError(Exception):
    """Redis is unavailable and the policy fails closed."""

    def __init__(self, policy: Policy, retry_in: float) -> None:
        super().__init__(f"rate limiting for {policy.name!r} is unavailable")
        self.policy = policy
        self.retry_in = retry_in


class Guard:
    def __init__(
        self,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        metrics: RateLimitMetrics,
        fail_closed: frozenset[str],
        local: LocalLimiter | None = None,
    ) -> None:
        self.limiter = limiter
        self.breaker = breaker
        self.metrics = metrics
        self.fail_closed = fail_closed
        self.local = local or LocalLimiter()
        self.in_fallback = False

    @classmethod
    def build(
        cls,
        redis: RedisClient,
        settings: ApiSettings,
        metrics: RateLimitMetrics,
        registry: CollectorRegistry,
    ) -> Guard:
        limiter = RateLimiter(redis, Keys(settings.key_prefix), denials=DenialCache())
        breaker = CircuitBreaker.from_settings(
            BREAKER,
            settings,
            failures=UNAVAILABLE_ERRORS,
            on_change=breaker_metrics(registry).hook(BREAKER),
        )
        return cls(limiter, breaker, metrics, frozenset(settings.rate_limit_fail_closed))

    async def check(self, policy: Policy, identifier: str) -> Decision:
        """The decision; `RateLimitUnavailableError` when Redis is away and `policy` fails
        closed."""
        decision = self.limiter.cached_denial(policy, identifier)
        if decision is None:
            try:
                decision = await self.breaker.call(self.limiter.check, policy, identifier)
            except REDIS_DOWN as exc:
                return self._fallback(policy, identifier, exc)
            if self.in_fallback:
                self._leave_fallback()
        self.metrics.count(policy.name, "allowed" if decision.allowed else "limited")
        return decision

    def _fallback(self, policy: Policy, identifier: str, exc: BaseException) -> Decision:
        if not self.in_fallback:
            self.in_fallback = True
            self.metrics.fallback_active.set(1)
            logger.warning(
                "rate limiter: Redis unavailable (%s); deciding in-process, %s refused",
                type(exc).__name__,
                ", ".join(sorted(self.fail_closed)) or "no policy",
            )
        if policy.name in self.fail_closed:
            self.metrics.count(policy.name, "unavailable")
            raise RateLimitUnavailableError(policy, self.breaker.retry_in())
        decision = self.local.check(policy, identifier)
        self.metrics.count(
            policy.name, "fallback_allowed" if decision.allowed else "fallback_limited"
        )
        return decision

    def _leave_fallback(self) -> None:
        self.in_fallback = False
        self.metrics.fallback_active.set(0)
        self.local.clear()  # the next outage starts afresh, as a new instance would
        logger.info("rate limiter: Redis answers again; shared limits apply")
