"""Prometheus helpers: one registry per app (so tests can build many apps in one process)."""

from __future__ import annotations

from collections.abc import Callable
from weakref import WeakKeyDictionary

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from shared.breaker import State

# Latency buckets in seconds, from 100 µs (a near-cache hit) to 2.5 s (a timeout).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def make_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def mount_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """`GET /metrics` in the Prometheus text format."""

    async def metrics() -> Response:
        return metrics_response(registry)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


class BreakerMetrics:
    """`circuit_breaker_open{breaker}`: 1 while a breaker is open or half-open, 0 closed.

    Set from the breaker's `on_change` hook, i.e. on transitions only: a call through a
    closed breaker pays no metric update.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.open = Gauge(
            "circuit_breaker_open",
            "1 while the named circuit breaker is open or half-open, 0 while closed",
            ["breaker"],
            registry=registry,
        )

    def hook(self, breaker: str) -> Callable[[State], None]:
        """The `on_change` for the breaker named `breaker`; its series starts at 0."""
        child = self.open.labels(breaker)
        child.set(0)

        def on_change(state: State) -> None:
            child.set(0 if state is State.CLOSED else 1)

        return on_change


# One gauge per registry, made by whoever asks first: breakers are built in several places
# (the limiter's is built where only the registry is at hand), and a registry refuses a
# second metric of the same name. Weak keys: a registry dropped by a test is freed.
_BREAKERS: WeakKeyDictionary[CollectorRegistry, BreakerMetrics] = WeakKeyDictionary()


def breaker_metrics(registry: CollectorRegistry) -> BreakerMetrics:
    metrics = _BREAKERS.get(registry)
    if metrics is None:
        metrics = _BREAKERS[registry] = BreakerMetrics(registry)
    return metrics
