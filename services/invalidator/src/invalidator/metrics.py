"""The invalidator's metrics: the toolkit's stream metrics plus the invalidation lag."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.metrics import LATENCY_BUCKETS
from shared.streams import StreamMetrics

# A live consumer purges within milliseconds; a backlog after an outage takes seconds to
# minutes. Both ends matter, so the buckets run from 100 µs to 5 minutes.
LAG_BUCKETS = (*LATENCY_BUCKETS, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class InvalidatorMetrics:
    registry: CollectorRegistry
    stream: StreamMetrics
    lag: Histogram
    purged_keys: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> InvalidatorMetrics:
        return cls(
            registry=registry,
            stream=StreamMetrics.create(registry),
            lag=Histogram(
                "invalidation_lag_seconds",
                "From the event's occurred_at to its purge being done",
                buckets=LAG_BUCKETS,
                registry=registry,
            ),
            purged_keys=Counter(
                "invalidation_purged_keys", "Value and lease keys deleted", registry=registry
            ),
        )
