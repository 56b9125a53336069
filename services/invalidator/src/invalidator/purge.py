"""The use case: purge what a batch of user events made stale, then tell the api instances.

Per batch, in one pipeline on the cache Redis: `DEL <user> <user lease>` once per distinct
user of an update / delete / password change (one command, one hash tag: atomic, and a
reader holding a lease from before the write can never store the old row back), and one
`INCR` of the list generation for the whole batch (one bump invalidates every cached page
of every event in it; a bump per event would change nothing more). Then one `PUBLISH` per
event of `{"keys": [...], "generation": <int>, "event_id": "<uuid>"}` on
`app:cache:invalidated`, in a second pipeline (the generation is only known after the first).

Idempotent: deleting absent keys and bumping a counter again are harmless. Pub/sub may lose a
notice: a failed publish is counted and logged, never retried (the near cache's TTL bounds
it); the purge itself is what must happen, and it is done before the entry is acked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from invalidator.config import PURGED_TYPES, USER_TYPES
from invalidator.metrics import InvalidatorMetrics
from shared.keys import Keys
from shared.streams import Delivery

logger = logging.getLogger(__name__)


class Purger:
    """The batch handler of the `invalidator` group (see the module docstring)."""

    def __init__(self, cache: Redis, keys: Keys, metrics: InvalidatorMetrics | None = None):
        self.cache = cache
        self.keys = keys
        self.metrics = metrics
        self.channel = keys.cache_invalidated()

    async def __call__(self, batch: Sequence[Delivery]) -> Mapping[str, BaseException]:
        relevant = [d for d in batch if d.event.type in USER_TYPES]  # session.* is not ours
        if not relevant:
            return {}
        users = sorted({str(d.event.payload.user_id) for d in relevant if _purges(d)})
        pipe = self.cache.pipeline(transaction=False)
        for uid in users:
            # Queued on the pipeline (redis-py types every command as an awaitable).
            pipe.delete(self.keys.user(uid), self.keys.user_lease(uid))  # type: ignore[unused-awaitable]
        pipe.incr(self.keys.user_list_gen())  # type: ignore[unused-awaitable]
        results: list[Any] = await pipe.execute(raise_on_error=False)
        finished = time.time()
        failures = _failures(relevant, users, results)
        done = [d for d in relevant if d.entry_id not in failures]
        if done:
            self._observe(done, finished, sum(r for r in results[:-1] if isinstance(r, int)))
            await self._announce(done, int(results[-1]))
        return failures

    def _observe(self, done: list[Delivery], finished: float, deleted: int) -> None:
        if self.metrics is None:
            return
        self.metrics.purged_keys.inc(deleted)
        for delivery in done:
            self.metrics.lag.observe(max(0.0, finished - delivery.event.occurred_at.timestamp()))

    async def _announce(self, done: list[Delivery], generation: int) -> None:
        pipe = self.cache.pipeline(transaction=False)
        for delivery in done:
            pipe.publish(self.channel, self._notice(delivery, generation))  # type: ignore[unused-awaitable]  # queued
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            if self.metrics:
                self.metrics.notices_lost.inc(len(done))
            logger.warning("could not publish %d purge notices: %s", len(done), exc)

    def _notice(self, delivery: Delivery, generation: int) -> bytes:
        event = delivery.event
        keys = []
        if _purges(delivery):
            uid = str(event.payload.user_id)
            keys = [self.keys.user(uid), self.keys.user_lease(uid)]
        return orjson.dumps({"keys": keys, "generation": generation, "event_id": str(event.id)})


def _purges(delivery: Delivery) -> bool:
    return delivery.event.type in PURGED_TYPES


def _failures(
    relevant: list[Delivery], users: list[str], results: list[Any]
) -> dict[str, BaseException]:
    """Which entries failed: all of them if the bump failed, else those whose DEL failed."""
    bump = results[-1]
    if isinstance(bump, BaseException):
        return {d.entry_id: bump for d in relevant}
    failed_users = {
        uid: result
        for uid, result in zip(users, results, strict=False)
        if isinstance(result, BaseException)
    }
    return {
        d.entry_id: failed_users[str(d.event.payload.user_id)]
        for d in relevant
        if _purges(d) and str(d.event.payload.user_id) in failed_users
    }
