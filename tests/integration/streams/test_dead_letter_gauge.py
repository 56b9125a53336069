"""`stream_dead_letters`: housekeeping exports the dead-letter stream's length, on a real Redis."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from shared.keys import Keys
from shared.streams import Housekeeper, StreamMetrics
from shared.streams.housekeeping import ALL_GROUPS
from tests.integration.streams.support import publish, user_event

GROUP = "dlq-gauge"


async def test_housekeeping_exports_the_length_of_the_dead_letter_stream(
    redis: Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    stream = keys.user_events()
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await publish(redis, stream, user_event("user.updated"))
    registry = CollectorRegistry()
    housekeeper = Housekeeper(
        redis=redis,
        keys=keys,
        stream=stream,
        group=GROUP,
        consumer="me",
        interval=30.0,
        idle_limit=60.0,
        metrics=StreamMetrics.create(registry),
    )

    def dead_letters() -> float | None:
        return registry.get_sample_value("stream_dead_letters", {"group": ALL_GROUPS})

    await housekeeper.run_once()
    assert dead_letters() == 0.0  # no DLQ yet: exported as empty, not missing
    for reason in ("malformed", "handler_failed", "invalid"):
        await redis.xadd(keys.dead_letters(), {"data": "{}", "dlq:reason": reason})
    await housekeeper.run_once()
    assert dead_letters() == 3.0
