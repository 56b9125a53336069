"""An in-process near cache in front of Redis, kept honest by the purge channel.

Bounded LRU with a TTL. Entries are dropped key by key from `Keys.cache_invalidated()`
messages (`{"keys": [...], "generation": <int|null>, "event_id": "<uuid>"}`) and dropped
whole whenever the subscription (re)connects: pub/sub may lose messages while disconnected,
so staleness is bounded by the TTL, never unbounded. While the subscription is down the near
cache answers nothing.

`epoch` closes a race: a reader that fetched from Redis before a purge must not put its
now-old value in after the purge, so `put` takes the epoch read before the fetch and is
ignored when any drop happened since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.connections import UNAVAILABLE_ERRORS

logger = logging.getLogger(__name__)

_REDIS_ERRORS: Final[tuple[type[BaseException], ...]] = (*UNAVAILABLE_ERRORS, RedisError)
_RETRY_FIRST: Final = 0.05
_RETRY_CAP: Final = 2.0


def purge_message(keys: Iterable[str], generation: int | None, event_id: str | None) -> bytes:
    """The JSON every purger publishes on the invalidation channel."""
    return orjson.dumps({"keys": list(keys), "generation": generation, "event_id": event_id})


def purged_keys(data: bytes | str) -> list[str]:
    """The keys in one purge message; `ValueError` when it is not one."""
    document: Any = orjson.loads(data)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("purge message without a list of keys")
    return keys


class NearCacheMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        lookups = Counter(
            "near_cache_lookups", "near cache lookups by result", ["result"], registry=registry
        )
        self.hit = lookups.labels("hit")
        self.miss = lookups.labels("miss")
        self.drops = Counter("near_cache_drops", "keys dropped by purges", registry=registry)
        self.clears = Counter(
            "near_cache_clears", "whole clears on (re)subscription", registry=registry
        )


class NearCache:
    def __init__(
        self,
        size: int,
        ttl: float,
        *,
        metrics: NearCacheMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.ttl = ttl
        self.metrics = metrics or NearCacheMetrics(None)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.epoch = 0
        # False until the purge subscription is confirmed: unsubscribed, we would serve blind.
        self.live = False

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        data = self.peek(key)
        (self.metrics.miss if data is None else self.metrics.hit).inc()
        return data

    def peek(self, key: str) -> bytes | None:
        """`get` without counting: for a caller that counts the hit itself and whose miss
        falls through to a `get` (which counts it), so no lookup is counted twice."""
        entry = self._entries.get(key) if self.live else None
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, data: bytes, epoch: int) -> None:
        """Keep `data` unless a purge happened since `epoch` was read."""
        if not self.live or epoch != self.epoch or self.size <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl, data)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, keys: Iterable[str]) -> None:
        self.epoch += 1
        for key in keys:
            if self._entries.pop(key, None) is not None:
                self.metrics.drops.inc()

    def clear(self, *, live: bool) -> None:
        self.epoch += 1
        self._entries.clear()
        self.live = live
        self.metrics.clears.inc()


class PurgeSubscriber:
    """Feeds a `NearCache` from the purge channel; reconnects with backoff, forever."""

    def __init__(self, redis: Redis, channel: str, near: NearCache, poll: float = 1.0) -> None:
        self.redis = redis
        self.channel = channel
        self.near = near
        self.poll = poll
        self.subscriptions = 0  # confirmed (re)subscriptions, for health and tests
        self._delay = _RETRY_FIRST

    async def run(self) -> None:
        self._delay = _RETRY_FIRST
        while True:
            try:
                await self._listen()
            except _REDIS_ERRORS as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # A cancellation redis-py turned into a timeout: stop, as asked.
                    raise asyncio.CancelledError from exc
                logger.warning("purge subscription lost (%s); near cache off", type(exc).__name__)
            self.near.clear(live=False)
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, _RETRY_CAP)

    async def _listen(self) -> None:
        async with self.redis.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=self.poll)
                if message is not None:
                    self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # First subscription or redis-py's silent resubscribe after a reconnect: anything
            # may have been purged while we were not listening.
            self.subscriptions += 1
            self._delay = _RETRY_FIRST
            self.near.clear(live=True)
        elif kind == "message":
            try:
                self.near.drop(purged_keys(message["data"]))
            except (ValueError, orjson.JSONDecodeError):
                logger.warning("ignored a malformed purge message on %s", self.channel)
