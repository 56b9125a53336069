"""The session service's Prometheus metrics, on a registry of its own per app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from session_service.errors import SessionStoreUnavailable
from shared.streams import StreamMetrics

logger = logging.getLogger(__name__)


class SessionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.stream = StreamMetrics.create(registry)  # the `session` group's consumer
        self.created = Counter("sessions_created_total", "Sessions created.", registry=registry)
        self.refreshed = Counter(
            "sessions_refreshed_total",
            "Sessions whose idle expiry was extended.",
            registry=registry,
        )
        self.rotated = Counter("sessions_rotated_total", "Sessions rotated.", registry=registry)
        self.destroyed = Counter(
            "sessions_destroyed_total",
            "Sessions destroyed one at a time, by reason.",
            ["reason"],
            registry=registry,
        )
        self.revoked = Counter(
            "sessions_revoked_total",
            "Sessions revoked by revoke-all, by trigger.",
            ["trigger"],
            registry=registry,
        )
        self.replica_acks = Counter(
            "sessions_replica_acks_total",
            "Session writes (create, rotate, destroy, revoke) by what was known of a "
            "replica's copy when they were acknowledged: confirmed, timed_out, no_replica, "
            "unchecked.",
            ["operation", "outcome"],
            registry=registry,
        )
        self.active = Gauge(
            "sessions_active",
            "Live session records, sampled by a periodic SCAN.",
            registry=registry,
        )


async def sample_active(
    metrics: SessionMetrics,
    count: Callable[[], Awaitable[int]],
    interval: float,
    stop: asyncio.Event,
) -> None:
    """Set the `active` gauge every `interval` seconds until `stop` is set.

    Sampled rather than counted: records expire inside Redis, so an in-process counter
    would drift; a SCAN every minute costs little and is exact when it runs. A stop event,
    not cancellation alone: a cancel landing inside redis-py's pool wait can be swallowed
    on Python 3.11, leaving the loop asleep for a whole interval at shutdown.
    """
    while not stop.is_set():
        try:
            metrics.active.set(await count())
        except SessionStoreUnavailable as exc:
            logger.warning("could not sample active sessions: %s", exc.reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
