"""A generic cache-aside client over Redis: JSON values, mandatory TTLs, leases, metrics.

Leases are the stale-set and thundering-herd cures of memcache at Facebook
(docs/decisions/0016-leases.md): on a miss the reader takes `lease_key` with `SET NX PX`, loads,
and stores with one script that writes only while its lease token still stands. An invalidation
deletes the value and the lease in one `DEL` (both keys share a hash tag), so a reader that
loaded before a write can never put the old value back. A reader that meets someone else's lease
polls for the value a bounded few milliseconds, then loads without storing.

Reads (`GET`) go through the client's auto-pipeline (`shared.autopipeline`): the GETs of
concurrent requests — and their rate-limit checks, on the same client — share one round trip.

Every Redis failure surfaces as `CacheUnavailableError` (a `CacheError`), and an open breaker
raises it without touching the network, so callers fail open with one `except`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.exceptions import RedisError

from shared.autopipeline import auto_pipeline
from shared.breaker import CircuitBreaker
from shared.cache.metrics import CacheMetrics
from shared.connections import UNAVAILABLE_ERRORS, RedisClient
from shared.errors import CacheError, CircuitOpenError, ValueTooLargeError
from shared.nearcache import PurgeNotice

# A versioned value is stored as \x01v<version>\x01<data>: the version travels with the data,
# so an eviction (allkeys-lru) can never keep one without the other. Versions are integers
# (a row's updated_at in µs: < 2^53, exact as Lua numbers).
_VERSION_OF = """
local function newer_cached(key, version)
  local cached = redis.call('GET', key)
  if not cached then return false end
  local v = string.match(cached, '^\1v(%d+)\1')
  return v ~= nil and tonumber(v) >= tonumber(version)
end
"""
# KEYS[1] value, KEYS[2] lease; ARGV token, value, ttl in ms, version ('' = unversioned).
# Writes only under our own lease, and never over a value as new or newer (a writer's
# write-through got there first). The lease is left to expire, not deleted: a reader whose
# GET missed just before this store must not win a fresh lease and load again (one load per
# key per lease period).
_STORE_IF_LEASED: Final = (
    _VERSION_OF
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[4] ~= '' and newer_cached(KEYS[1], ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
)
# KEYS[1] value, KEYS[2] lease; ARGV value, ttl in ms, version. The writer's write-through:
# stores unless the cached value is as new or newer, and deletes the lease, so a reader that
# loaded before the write cannot store the old row over it (its lease is gone).
_PUT_IF_NEWER: Final = (
    _VERSION_OF
    + """
if newer_cached(KEYS[1], ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""
)
# KEYS[1] value, KEYS[2] lease; ARGV version. A purge that spares a value at least as new
# as the change it was sent for (the writer's write-through); returns the keys deleted.
PURGE_IF_OLDER: Final = (
    _VERSION_OF
    + """
if newer_cached(KEYS[1], ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1], KEYS[2])
"""
)
_MARK: Final = b"\x01v"
# KEYS[1] lease; ARGV[1] token. Compare-and-delete: a failed loader frees its lease at once.
_RELEASE_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_FIRST_POLL: Final = 0.001
_MAX_POLL: Final = 0.01


class CacheUnavailableError(CacheError):
    """Redis failed, timed out, or its breaker is open: the caller falls back to the source."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """A `get_or_set` answer: the encoded value (`None` when absent), whether Redis had it."""

    data: bytes | None
    hit: bool
    stored: bool = False

    @property
    def value(self) -> Any:
        return None if self.data is None else orjson.loads(self.data)


def encode(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


class Cache:
    def __init__(
        self,
        redis: RedisClient,
        *,
        max_value_bytes: int = 1_048_576,
        metrics: CacheMetrics | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.redis = redis
        self.max_value_bytes = max_value_bytes
        self.metrics = metrics or CacheMetrics(None)
        self.breaker = breaker or CircuitBreaker("cache", failures=UNAVAILABLE_ERRORS)
        self._pipeline = auto_pipeline(redis)
        self._store = redis.register_script(_STORE_IF_LEASED)
        self._release = redis.register_script(_RELEASE_LEASE)

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(
        self, op: str, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """`fn(*args, **kwargs)`, one Redis command, through the breaker, counting errors
        and latency."""
        started = time.perf_counter()
        try:
            result = await self.breaker.call(fn, *args, **kwargs)
        except CircuitOpenError:
            self.metrics.count(op, "short_circuit")
            raise CacheUnavailableError(f"cache breaker open; {op} not attempted") from None
        except UNAVAILABLE_ERRORS as exc:
            self.metrics.count(op, "error")
            raise CacheUnavailableError(f"cache {op} failed: {type(exc).__name__}") from exc
        except RedisError as exc:
            self.metrics.count(op, "error")
            raise CacheError(f"cache {op} failed: {exc}") from exc
        self.metrics.observe(op, time.perf_counter() - started)
        return result

    def _encode(self, key: str, value: Any) -> bytes:
        data = encode(value)
        if len(data) > self.max_value_bytes:
            self.metrics.count("set", "too_large")
            raise ValueTooLargeError(key, len(data), self.max_value_bytes)
        return data

    # -- plain operations -------------------------------------------------------------------

    async def get_bytes(self, key: str) -> bytes | None:
        """The stored bytes, or None on a miss. Counted as a hit or a miss."""
        data: bytes | None = await self._call("get", self._pipeline.execute, "GET", key)
        self.metrics.count("get", "miss" if data is None else "hit")
        return None if data is None else unversioned(data)

    async def read_bytes(self, key: str) -> bytes | None:
        """`get_bytes` for a read no caller asked for (a near cache's refresh-ahead): not a
        hit or a miss, so it leaves the hit ratio alone; its latency and errors count under
        the `refresh` operation."""
        data: bytes | None = await self._call("refresh", self._pipeline.execute, "GET", key)
        return None if data is None else unversioned(data)

    async def get(self, key: str, default: Any = None) -> Any:
        data = await self.get_bytes(key)
        return default if data is None else orjson.loads(data)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        """Store `value` as JSON for `ttl` seconds (mandatory: every cache key expires)."""
        await self.set_bytes(key, self._encode(key, value), ttl)

    async def set_bytes(self, key: str, data: bytes, ttl: float) -> None:
        await self._call("set", self.redis.set, key, data, px=_ms(ttl))

    async def delete(self, *keys: str) -> int:
        """Delete keys in one atomic `DEL` (a value and its lease go together)."""
        return int(await self._call("delete", self.redis.delete, *keys))

    async def exists(self, key: str) -> bool:
        return bool(await self._call("exists", self.redis.exists, key))

    async def invalidate(
        self,
        keys: list[str],
        *,
        generation_key: str | None = None,
        channel: str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> int | None:
        """`DEL keys` (atomic), `INCR generation_key`, then `PUBLISH` the purge: two round
        trips, because the notice carries the generation the `INCR` returns.

        Returns the new generation (None when none was bumped).
        """
        pipe = self.redis.pipeline(transaction=False)
        # Pipeline methods queue and return the pipeline; nothing to await until execute().
        if keys:
            _ = pipe.delete(*keys)
        if generation_key is not None:
            _ = pipe.incr(generation_key)
        results: list[Any] = await self._call("invalidate", pipe.execute)
        generation = int(results[-1]) if generation_key is not None else None
        if channel is not None:
            await self.announce(channel, keys, event_id, generation)
        return generation

    async def announce(
        self, channel: str, keys: list[str], event_id: uuid.UUID | None, generation: int | None
    ) -> int:
        """`PUBLISH` a purge notice (what `invalidate` sends); the number of subscribers
        that received it."""
        notice = PurgeNotice(keys=keys, event_id=event_id, generation=generation)
        return int(await self._call("publish", self.redis.publish, channel, notice.encode()))

    # -- leases -----------------------------------------------------------------------------

    async def acquire_lease(self, lease_key: str, ttl: float) -> str | None:
        """A new lease token, or None when another reader holds the lease."""
        token = secrets.token_hex(16)
        taken = await self._call("lease", self.redis.set, lease_key, token, nx=True, px=_ms(ttl))
        return token if taken else None

    async def store_leased(
        self,
        key: str,
        lease_key: str,
        token: str,
        data: bytes,
        ttl: float,
        *,
        version: int | None = None,
    ) -> bool:
        """Store only while `token` still holds the lease (and, with a `version`, only over
        an older value); False when an invalidation or a newer write won."""
        stored_data = data if version is None else versioned(data, version)
        args = [token, stored_data, _ms(ttl), "" if version is None else version]
        stored = bool(await self._call("store", self._store, keys=[key, lease_key], args=args))
        self.metrics.count("store", "stored" if stored else "refused")
        return stored

    async def put_if_newer(
        self,
        key: str,
        lease_key: str,
        data: bytes,
        version: int,
        ttl: float,
        *,
        generation_key: str | None = None,
    ) -> bool:
        """A writer's write-through: store `data` unless the cached value is as new or newer,
        delete the lease, and bump `generation_key` in the same round trip. False when a
        newer value was already there."""
        pipe = self.redis.pipeline(transaction=False)
        # Queued on the pipeline (redis-py types every command as an awaitable).
        # EVAL, not EVALSHA: a write is rare, and no NOSCRIPT can surface after a restart.
        pipe.eval(_PUT_IF_NEWER, 2, key, lease_key, versioned(data, version), _ms(ttl), version)  # type: ignore[unused-awaitable]
        if generation_key is not None:
            pipe.incr(generation_key)  # type: ignore[unused-awaitable]
        results: list[Any] = await self._call("put", pipe.execute)
        stored = bool(results[0])
        self.metrics.count("put", "stored" if stored else "refused")
        return stored

    async def release_lease(self, lease_key: str, token: str) -> None:
        await self._call("release", self._release, keys=[lease_key], args=[token])

    async def wait_for(self, key: str, wait: float) -> bytes | None:
        """Poll for a value another reader is loading, for at most `wait` seconds."""
        deadline = time.monotonic() + wait
        delay = _FIRST_POLL
        while time.monotonic() < deadline:
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            data: bytes | None = await self._call("get", self._pipeline.execute, "GET", key)
            if data is not None:
                return unversioned(data)
            delay = min(delay * 2, _MAX_POLL)
        return None

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        ttl: float,
        *,
        lease_key: str,
        lease_ttl: float = 2.0,
        lease_wait: float = 0.05,
        none_ttl: float | None = None,
        version_of: Callable[[Any], int] | None = None,
    ) -> Lookup:
        """Cache-aside read with a lease: at most one `loader` call per key per lease period.

        `loader` returning None caches JSON `null` for `none_ttl` seconds (negative caching)
        when it is given, else caches nothing. With `version_of`, a loaded value is stored
        with its version and never over a newer one (see `put_if_newer`).
        """
        data = await self.get_bytes(key)
        if data is not None:
            return Lookup(data, hit=True)
        token = await self.acquire_lease(lease_key, lease_ttl)
        if token is None:
            data = await self.wait_for(key, lease_wait)
            if data is not None:
                return Lookup(data, hit=True)
            self.metrics.count("lease", "waited_out")
            return Lookup(_encode_optional(await loader()), hit=False)
        return await self._load_and_store(
            key, lease_key, token, loader=loader, ttl=ttl, none_ttl=none_ttl, version_of=version_of
        )

    async def _load_and_store(
        self,
        key: str,
        lease_key: str,
        token: str,
        *,
        loader: Callable[[], Awaitable[Any]],
        ttl: float,
        none_ttl: float | None,
        version_of: Callable[[Any], int] | None,
    ) -> Lookup:
        try:
            value = await loader()
        except BaseException:
            await asyncio.shield(self._quiet_release(lease_key, token))
            raise
        data = _encode_optional(value)
        store_ttl = ttl if data is not None else none_ttl
        if store_ttl is None or (data is not None and len(data) > self.max_value_bytes):
            await self._quiet_release(lease_key, token)
            return Lookup(data, hit=False)
        version = None if value is None or version_of is None else version_of(value)
        stored = await self.store_leased(
            key, lease_key, token, data or b"null", store_ttl, version=version
        )
        return Lookup(data, hit=False, stored=stored)

    async def _quiet_release(self, lease_key: str, token: str) -> None:
        # Best effort: an unreleased lease only expires on its own after its short TTL.
        try:
            await self.release_lease(lease_key, token)
        except CacheError:
            return


def _encode_optional(value: Any) -> bytes | None:
    return None if value is None else encode(value)


def _ms(seconds: float) -> int:
    if seconds <= 0:
        raise ValueError("a cache TTL must be positive")
    return max(1, round(seconds * 1000))


def versioned(data: bytes, version: int) -> bytes:
    """`data` with its version, as the cache stores it (see `_VERSION_OF`)."""
    return b"%b%d\x01%b" % (_MARK, version, data)


def unversioned(raw: bytes) -> bytes:
    """The data of a cached value, with or without a version."""
    if raw[:2] == _MARK:
        return raw[raw.index(b"\x01", 2) + 1 :]
    return raw
