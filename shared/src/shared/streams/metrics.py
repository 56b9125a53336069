"""Prometheus metrics of one consumer group, registered on the app's own registry."""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True, slots=True)
class StreamMetrics:
    """Counters and gauges every consumer of the toolkit exports, labelled by group.

    - `stream_events_handled_total{group,type}`: entries whose effect is done and acked
    - `stream_dead_lettered_total{group,reason}`: letters written by the group's consumers;
      reason is malformed / unknown_type / invalid / handler_failed (an entry no group can
      parse counts once, in the group that wrote its letter)
    - `stream_reclaimed_total{group}`: entries taken over with XAUTOCLAIM
    - `stream_handler_failures_total{group}`: failed deliveries (each retry counts)
    - `stream_replays_skipped_total{group}`: replayed entries meant for another group, acked
      without handling
    - `stream_pending{group}`, `stream_lag{group}`, `stream_oldest_pending_age_seconds{group}`:
      set by housekeeping from XINFO / XPENDING
    - `stream_dead_letters{group}`: letters now in the DLQ naming the group, and (`group="*"`)
      those no group could parse; set by housekeeping from a bounded count of the DLQ
    """

    handled: Counter
    dead_lettered: Counter
    reclaimed: Counter
    failures: Counter
    replays_skipped: Counter
    pending: Gauge
    lag: Gauge
    oldest_pending_age: Gauge
    dead_letters: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> StreamMetrics:
        return cls(
            handled=Counter(
                "stream_events_handled",
                "Stream entries handled and acked",
                ["group", "type"],
                registry=registry,
            ),
            dead_lettered=Counter(
                "stream_dead_lettered",
                "Stream entries moved to the dead-letter stream",
                ["group", "reason"],
                registry=registry,
            ),
            reclaimed=Counter(
                "stream_reclaimed",
                "Entries claimed from idle consumers (XAUTOCLAIM)",
                ["group"],
                registry=registry,
            ),
            failures=Counter(
                "stream_handler_failures",
                "Failed deliveries (left pending for retry or dead-lettered)",
                ["group"],
                registry=registry,
            ),
            replays_skipped=Counter(
                "stream_replays_skipped",
                "Replayed entries meant for another group, acked without handling",
                ["group"],
                registry=registry,
            ),
            pending=Gauge(
                "stream_pending", "Entries delivered but not acked", ["group"], registry=registry
            ),
            lag=Gauge(
                "stream_lag", "Entries not yet delivered to the group", ["group"], registry=registry
            ),
            oldest_pending_age=Gauge(
                "stream_oldest_pending_age_seconds",
                "Age of the oldest pending entry (from its id)",
                ["group"],
                registry=registry,
            ),
            dead_letters=Gauge(
                "stream_dead_letters",
                "Letters in the dead-letter stream naming the group (* = no group could parse)",
                ["group"],
                registry=registry,
            ),
        )

    def count_handled(self, group: str, types: Tally[str]) -> None:
        # One inc per type per batch: labels() per event would cost a lookup each.
        for event_type, count in types.items():
            self.handled.labels(group, event_type).inc(count)
