"""An in-process near cache in front of Redis, kept honest by the purge channel.

Bounded LRU with a TTL. Entries are dropped key by key from `Keys.cache_invalidated()`
messages (`{"keys": [...], "generation": <int|null>, "event_id": "<uuid>"}`) and dropped
whole whenever the subscription (re)connects: pub/sub may lose messages while disconnected,
so staleness is bounded by the TTL, never unbounded. While the subscription is down the near
cache answers nothing.

`epoch` closes a race: a reader that fetched from Redis before a purge must not put its
now-old value in after the purge, so `put` takes the epoch read before the fetch and is
ignored when any drop happened since.

Refresh-ahead: given a `refresh` reader, the subscriber reads a dropped key back from Redis
at once when this cache held it, and keeps what it reads under the same epoch rule. A write
stores its new value in Redis before it announces the purge (and an older value is never
put back: the versioned write-through and lease fills), so the read that follows the notice
finds the new value or nothing — never the purged one. The next request for a hot key then
meets a near-cache hit instead of the full miss path: one `GET` per notice per process that
held the key, only for keys it held.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.connections import UNAVAILABLE_ERRORS, RedisClient, pubsub_client
from shared.tasks import Backoff, raise_if_cancelling

logger = logging.getLogger(__name__)

_REDIS_ERRORS: Final[tuple[type[BaseException], ...]] = (*UNAVAILABLE_ERRORS, RedisError)
_RETRY_FIRST: Final = 0.05
_RETRY_CAP: Final = 2.0
# Refreshes in flight at once; beyond, a dropped key just waits for its next read.
MAX_REFRESHES: Final = 64
# A reader waits for at most this many refreshes of one key in a row (a purge landing while
# one is in flight starts another); after them it takes the miss path.
_REFRESH_WAITS: Final = 2

Refresh = Callable[[str], Awaitable[bytes | None]]


class PurgeNotice(BaseModel):
    """What one purge announces on `app:cache:invalidated`: plain JSON, published by the
    writing api instance and by the invalidator, read by every near cache. Pub/sub, so it
    may be lost: near-cache entries expire on their own (NEAR_CACHE_TTL)."""

    model_config = ConfigDict(frozen=True)

    keys: list[str] = Field(description="keys deleted (a user's value and lease); [] on create")
    event_id: uuid.UUID | None = Field(description="the event that caused the purge")
    generation: int | None = Field(description="the user list generation after the purge")

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def decode(cls, data: bytes | str) -> PurgeNotice:
        """The notice, or `ValueError` (pydantic's `ValidationError` is one) when it is not."""
        return cls.model_validate_json(data)

    @staticmethod
    def head(keys: list[str], event_id: uuid.UUID) -> bytes:
        """The JSON of a notice up to its `generation` value, for a script that appends the
        value and the closing brace (the invalidator bumps and announces in one script).
        `generation` is the model's last field, so head + value + `}` is `encode()`'s form."""
        return orjson.dumps({"keys": keys, "event_id": str(event_id)})[:-1] + b',"generation":'


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
        refreshes = Counter(
            "near_cache_refreshes",
            "dropped keys read back from Redis at once (refresh-ahead), by result",
            ["result"],
            registry=registry,
        )
        self.refreshed = refreshes.labels("stored")  # kept: the next read is a hit
        self.refresh_absent = refreshes.labels("absent")  # nothing cached in Redis
        self.refresh_raced = refreshes.labels("raced")  # another drop since: not kept
        self.refresh_failed = refreshes.labels("failed")  # Redis error or over the cap


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
        self._refreshes: dict[str, asyncio.Task[None]] = {}  # key -> its latest refresh
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

    def drop(self, keys: Iterable[str]) -> list[str]:
        """Drop `keys`; the ones this cache held."""
        self.epoch += 1
        held = [key for key in keys if self._entries.pop(key, None) is not None]
        if held:
            self.metrics.drops.inc(len(held))
        return held

    def refreshing(self, key: str) -> asyncio.Task[None] | None:
        """The refresh-ahead read of `key` in flight, if any: a reader that missed can wait
        for it instead of taking the miss path at the same moment."""
        return self._refreshes.get(key)

    def refresh_began(self, key: str, task: asyncio.Task[None]) -> None:
        self._refreshes[key] = task

    def refresh_ended(self, key: str, task: asyncio.Task[None]) -> None:
        if self._refreshes.get(key) is task:  # not a later refresh of the same key
            del self._refreshes[key]

    async def settled(self, key: str) -> bytes | None:
        """`peek(key)`, once the refreshes of `key` in flight (if any) have ended."""
        for _ in range(_REFRESH_WAITS):
            task = self._refreshes.get(key)
            if task is None:
                break
            await asyncio.wait((task,))  # never raises; the task ends within Redis's timeouts
        return self.peek(key)

    def refill(self, key: str, data: bytes | None, epoch: int) -> None:
        """Keep a refresh-ahead read of `key` (fetched after `epoch` was read), counted."""
        if data is None:
            self.metrics.refresh_absent.inc()
        elif epoch != self.epoch:
            self.metrics.refresh_raced.inc()
        else:
            self.put(key, data, epoch)
            self.metrics.refreshed.inc()

    def clear(self, *, live: bool) -> None:
        self.epoch += 1
        self._entries.clear()
        self.live = live
        self.metrics.clears.inc()


class PurgeSubscriber:
    """Feeds a `NearCache` from the purge channel; reconnects with backoff, forever."""

    def __init__(
        self,
        redis: RedisClient,
        channel: str,
        near: NearCache,
        poll: float = 1.0,
        *,
        refresh: Refresh | None = None,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.near = near
        self.poll = poll
        self.refresh = refresh  # None: a dropped key waits for its next read
        self._refreshing: set[asyncio.Task[None]] = set()
        self.subscriptions = 0  # confirmed (re)subscriptions, for health and tests
        self._backoff = Backoff(_RETRY_FIRST, _RETRY_CAP)
        self._node: str | None = None  # host:port subscribed to
        self._failed: str | None = None  # the node whose subscription just broke

    @property
    def node(self) -> str | None:
        """`host:port` of the server (on a cluster: the node) subscribed to, once known."""
        return self._node

    async def run(self) -> None:
        self._backoff.reset()
        try:
            while True:
                try:
                    await self._listen()
                except _REDIS_ERRORS as exc:
                    raise_if_cancelling()
                    logger.warning(
                        "purge subscription lost (%s); near cache off", type(exc).__name__
                    )
                    self._failed = self._node
                self.near.clear(live=False)
                await self._backoff.wait()
        finally:
            for task in self._refreshing:
                task.cancel()

    async def _listen(self) -> None:
        # On a cluster: one node's connection, another node after a failure (the purge
        # channel is broadcast to every node); a topology change clears the near cache
        # through the resubscription, like any reconnect.
        async with pubsub_client(self.redis, skip=self._failed) as client:
            kwargs = client.connection_pool.connection_kwargs
            self._node = f"{kwargs.get('host')}:{kwargs.get('port')}"
            # A failover elsewhere in a cluster can lose notices published to the dead
            # primary: the cluster's config epoch moves, and the near cache is dropped.
            epoch = await _cluster_epoch(client) if client is not self.redis else None
            await self._subscribed(client, epoch)

    async def _subscribed(self, client: Redis, epoch: int | None) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=self.poll)
                if message is not None:
                    self._handle(message)
                elif epoch is not None and (now := await _cluster_epoch(client)) != epoch:
                    logger.info(
                        "cluster topology changed (epoch %d -> %d): near cache dropped", epoch, now
                    )
                    epoch = now
                    self.near.clear(live=True)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # First subscription or redis-py's silent resubscribe after a reconnect: anything
            # may have been purged while we were not listening.
            self.subscriptions += 1
            self._backoff.reset()
            self.near.clear(live=True)
        elif kind == "message":
            try:
                keys = PurgeNotice.decode(message["data"]).keys
            except ValueError:
                logger.warning("ignored a malformed purge message on %s", self.channel)
                return
            near = self.near
            # A key whose refresh is in flight counts as held: that read is now too old.
            in_flight = [key for key in keys if near.refreshing(key) is not None]
            held = near.drop(keys)
            if self.refresh is not None and (held or in_flight):
                self._start_refresh(self.refresh, list(dict.fromkeys(held + in_flight)))

    def _start_refresh(self, refresh: Refresh, keys: list[str]) -> None:
        if len(self._refreshing) >= MAX_REFRESHES:
            self.near.metrics.refresh_failed.inc(len(keys))
            return
        task = asyncio.create_task(self._refill(refresh, keys, self.near.epoch))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)
        for key in keys:
            self.near.refresh_began(key, task)

    async def _refill(self, refresh: Refresh, keys: list[str], epoch: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            for key in keys:
                try:
                    data = await refresh(key)
                except Exception as exc:  # noqa: BLE001 - best effort: the next read fills it
                    logger.debug("near-cache refresh of %s failed: %s", key, exc)
                    self.near.metrics.refresh_failed.inc()
                    continue
                self.near.refill(key, data, epoch)
        finally:
            for key in keys:
                self.near.refresh_ended(key, task)


async def _cluster_epoch(node: Redis) -> int:
    """The cluster's current config epoch, as one node sees it (bumped by every failover)."""
    info = await node.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]  # unannotated in redis-py
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("cluster_current_epoch:"):
            return int(line.split(":", 1)[1])
    return 0
