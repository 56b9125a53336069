"""`invalidation_lag_seconds`: from an event's `occurred_at` to its purge being done, observed
by the invalidator's handler once the purge ran on a real Redis, and only then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from invalidator.metrics import InvalidatorMetrics
from invalidator.purge import Purger
from shared.keys import Keys
from shared.streams import Delivery
from tests.integration.streams.support import user_event


def delivery(kind: str, age: float, entry_id: str) -> Delivery:
    event = user_event(kind)
    occurred = datetime.now(UTC) - timedelta(seconds=age)
    return Delivery(entry_id, event.model_copy(update={"occurred_at": occurred}), {}, 1)


async def test_each_purged_event_is_observed_with_its_age_at_purge_time(
    redis: Redis, key_prefix: str
) -> None:
    registry = CollectorRegistry()
    purger = Purger(redis, Keys(key_prefix), InvalidatorMetrics.create(registry))

    def sample(suffix: str, **labels: str) -> float:
        return registry.get_sample_value(f"invalidation_lag_seconds{suffix}", labels) or 0.0

    assert sample("_count") == 0.0
    failures = await purger(
        [delivery("user.updated", 2.0, "1-0"), delivery("user.deleted", 0.0, "2-0")]
    )
    assert failures == {}
    assert sample("_count") == 2.0
    assert 2.0 <= sample("_sum") < 10.0
    assert sample("_bucket", le="1.0") == 1.0  # the fresh one, within milliseconds
    assert sample("_bucket", le="2.5") == 2.0


async def test_a_purge_that_failed_is_not_observed(redis: Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    registry = CollectorRegistry()
    purger = Purger(redis, keys, InvalidatorMetrics.create(registry))
    await redis.set(keys.user_list_gen(), "not a number")  # the generation bump fails

    failures = await purger([delivery("user.updated", 1.0, "1-0")])
    assert list(failures) == ["1-0"]
    assert (registry.get_sample_value("invalidation_lag_seconds_count") or 0.0) == 0.0
