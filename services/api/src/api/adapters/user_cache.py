"""Users through the cache: near cache → Redis (with leases) → database, failing open.

Any Redis failure (or an open breaker) answers from the database instead and counts a
degraded decision; writes still commit and the outbox carries their events.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry.trace import Span

from api.adapters.repository import document_version
from api.config import ApiSettings
from api.metrics import ApiMetrics
from shared.cache import Cache, CacheUnavailableError, Lookup, encode
from shared.errors import CacheError
from shared.keys import Keys
from shared.nearcache import NearCache
from shared.tracing import Attributes, Spans, messaging

logger = logging.getLogger(__name__)

Loader = Callable[[], Awaitable[Any]]


class UserCache:
    def __init__(
        self,
        cache: Cache,
        keys: Keys,
        settings: ApiSettings,
        metrics: ApiMetrics,
        near: NearCache | None = None,
        *,
        spans: Spans | None = None,
    ) -> None:
        self.cache = cache
        self.spans = spans  # None: tracing off
        self.keys = keys
        self.settings = settings
        self.metrics = metrics
        self.near = near if near is not None and near.enabled else None

    async def user(self, user_id: uuid.UUID, load: Loader) -> Lookup:
        """The user's JSON (None when absent) and whether a cache answered."""
        key = self.keys.user(user_id)
        near = self.near
        if near is not None:
            data = near.get(key)
            if data is not None:
                return Lookup(data, hit=True)
        epoch = near.epoch if near is not None else 0
        try:
            found = await self.cache.get_or_set(
                key,
                load,
                self.settings.user_cache_ttl,
                lease_key=self.keys.user_lease(user_id),
                lease_ttl=self.settings.cache_lease_ttl,
                lease_wait=self.settings.cache_lease_wait,
                none_ttl=self.settings.negative_cache_ttl,
                version_of=document_version,
            )
        except CacheError as exc:
            return await self._degraded("user_read", exc, load)
        if near is not None and found.data is not None and (found.hit or found.stored):
            near.put(key, found.data, epoch)
        return found

    async def refresh(self, key: str) -> bytes | None:
        """A user's cached JSON read back for the near cache right after a purge notice
        dropped it there (refresh-ahead, `shared.nearcache`); None when Redis has none."""
        return await self.cache.read_bytes(key)

    async def page(self, page: int, limit: int, load: Loader) -> Lookup:
        """One list page under the current generation: one `INCR` retires every page."""
        try:
            generation = int(await self.cache.get(self.keys.user_list_gen(), 0))
            key = self.keys.user_list_page(generation, page, limit)
            data = await self.cache.get_bytes(key)
            if data is not None:
                return Lookup(data, hit=True)
        except CacheError as exc:
            return await self._degraded("list_read", exc, load)
        data = encode(await load())
        try:
            # A page stored under a generation a write has since retired is never read again.
            await self.cache.set_bytes(key, data, self.settings.list_cache_ttl)
        except CacheError as exc:
            self._count_degraded("list_store", exc)
        return Lookup(data, hit=False, stored=True)

    async def purge_user(self, user_id: uuid.UUID | None, event_id: uuid.UUID) -> None:
        """After a commit: drop the user's value and lease, retire every list page, tell peers."""
        keys = [] if user_id is None else [self.keys.user(user_id), self.keys.user_lease(user_id)]
        if self.near is not None:
            self.near.drop(keys)
        if not self.settings.cache_invalidation.by_writer:
            return
        try:
            if self.spans is None:
                await self.cache.invalidate(
                    keys,
                    generation_key=self.keys.user_list_gen(),
                    channel=self.keys.cache_invalidated(),
                    event_id=event_id,
                )
            else:
                await self._traced_purge(self.spans, keys, event_id)
        except CacheError as exc:
            # The committed event reaches the invalidator through the outbox: nothing is lost.
            self._count_degraded("purge", exc)

    async def write_user(
        self, user_id: uuid.UUID, document: dict[str, Any], version: int, event_id: uuid.UUID
    ) -> None:
        """After an update's commit: store the new public view (unless a newer one is already
        there), retire every list page, and tell peers to drop their near-cache copies."""
        keys = [self.keys.user(user_id), self.keys.user_lease(user_id)]
        if self.near is not None:
            self.near.drop(keys)
        if not self.settings.cache_invalidation.by_writer:
            return
        channel = self.keys.cache_invalidated()
        try:
            with self._span("write-through", {"app.cache.version": version}) as span:
                stored = await self.cache.put_if_newer(
                    keys[0],
                    keys[1],
                    encode(document),
                    version,
                    self.settings.user_cache_ttl,
                    generation_key=self.keys.user_list_gen(),
                )
                if span is not None:
                    span.set_attribute("app.cache.stored", stored)
            with self._span("announce", messaging("send", channel)):
                await self.cache.announce(channel, keys, event_id, None)
        except CacheError as exc:
            # The committed event reaches the invalidator through the outbox: nothing is lost.
            self._count_degraded("write_through", exc)

    def _span(self, name: str, attributes: Attributes) -> AbstractContextManager[Span | None]:
        """A span of the current trace when tracing is on; nothing otherwise."""
        return nullcontext() if self.spans is None else self.spans.current(name, attributes)

    async def _traced_purge(self, spans: Spans, keys: list[str], event_id: uuid.UUID) -> None:
        """`purge` then `announce`, each a span: the same two round trips `invalidate` makes."""
        attributes: Attributes = {
            "app.cache.keys": len(keys),
            "messaging.message.id": str(event_id),
        }
        with spans.current("purge", attributes) as span:
            generation = await self.cache.invalidate(keys, generation_key=self.keys.user_list_gen())
            span.set_attribute("app.cache.generation", generation or 0)
        channel = self.keys.cache_invalidated()
        with spans.current("announce", messaging("send", channel)) as span:
            receivers = await self.cache.announce(channel, keys, event_id, generation)
            span.set_attribute("app.purge.receivers", receivers)

    async def warm(self, user_id: uuid.UUID, load: Loader) -> None:
        await self.user(user_id, load)

    async def _degraded(self, operation: str, exc: CacheError, load: Loader) -> Lookup:
        self._count_degraded(operation, exc)
        value = await load()
        return Lookup(None if value is None else encode(value), hit=False)

    def _count_degraded(self, operation: str, exc: CacheError) -> None:
        self.metrics.degraded.labels(operation).inc()
        if not isinstance(exc, CacheUnavailableError):
            logger.warning("cache %s failed: %s", operation, exc)
