"""The api's Prometheus metrics, all in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.cache import CacheMetrics
from shared.metrics import LATENCY_BUCKETS, make_registry
from shared.nearcache import NearCacheMetrics


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or make_registry()
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
        self.db_loads = Counter(
            "user_db_loads", "user reads that reached the database", ["kind"],
            registry=self.registry,
        )  # fmt: skip
