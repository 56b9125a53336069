"""The api's Prometheus metrics, all in the app's own registry."""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.cache import CacheMetrics
from shared.metrics import LATENCY_BUCKETS, breaker_metrics, make_registry
from shared.nearcache import NearCacheMetrics

# What became of one call to the session service (`session_service_requests_total{outcome}`):
# ok (2xx), not_found (404: no such session — an answer, not a fault), error (5xx, a refused
# service token, any other 4xx), timeout, unreachable (connect or other transport failure),
# circuit_open (not attempted: the breaker is open).
SESSION_OUTCOMES: Final = ("ok", "not_found", "error", "timeout", "unreachable", "circuit_open")


class SessionServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "session_service_requests", "calls to the session service by outcome",
            ["outcome"], registry=registry,
        )  # fmt: skip
        # Every outcome bound (and exported, at 0) up front: an error ratio needs all of them,
        # and labels() per call would take a lock and hash each time.
        self._children = {outcome: self.requests.labels(outcome) for outcome in SESSION_OUTCOMES}

    def count(self, outcome: str) -> None:
        self._children[outcome].inc()


class RateLimitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "ratelimit_decisions",
            "rate-limit decisions by policy: allowed, limited (Redis), fallback_allowed, "
            "fallback_limited (in-process, Redis unavailable), unavailable (refused, 503)",
            ["policy", "decision"],
            registry=registry,
        )
        self.fallback_active = Gauge(
            "ratelimit_fallback_active",
            "1 while the limiter decides in-process because Redis does not answer",
            registry=registry,
        )
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, policy: str, decision: str) -> None:
        # Bound children, cached: labels() takes a lock and hashes on every call.
        child = self._children.get((policy, decision))
        if child is None:
            child = self._children[(policy, decision)] = self.decisions.labels(policy, decision)
        child.inc()


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or make_registry()
        self.ratelimit = RateLimitMetrics(self.registry)
        self.cache = CacheMetrics(self.registry)
        self.near = NearCacheMetrics(self.registry)
        self.requests = Counter(
            "http_requests", "requests by method, route and status",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "http_request_seconds", "request latency by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.degraded = Counter(
            "degraded_decisions", "requests served without Redis (fail open), by operation",
            ["operation"], registry=self.registry,
        )  # fmt: skip
        self.outbox_published = Counter(
            "outbox_published", "outbox rows published to the stream", registry=self.registry
        )
        self.outbox_errors = Counter(
            "outbox_publish_errors", "failed relay attempts (Redis down)", registry=self.registry
        )
        self.outbox_replica_acks = Counter(
            "outbox_replica_acks",
            "published outbox batches by what a replica confirmed: confirmed, timed_out and "
            "unchecked (published again), no_replica, off",
            ["outcome"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "outbox_backlog", "outbox rows not yet published (set by the relay)",
            registry=self.registry,
        )  # fmt: skip
        self.outbox_oldest_age = Gauge(
            "outbox_oldest_unsent_age_seconds",
            "age of the oldest unpublished outbox row, 0 when none (set by the relay)",
            registry=self.registry,
        )
        self.session_service = SessionServiceMetrics(self.registry)
        self.breakers = breaker_metrics(self.registry)
        self.db_loads = Counter(
            "user_db_loads", "user reads that reached the database", ["kind"],
            registry=self.registry,
        )  # fmt: skip
