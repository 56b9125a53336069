"""A Redis lock with a fencing number, renewal while held, and loss detection.

Usage::

    from shared.lock import lock

    async with lock(redis, keys, "warmup", ttl=30.0, timeout=0.0) as held:
        await do_work(fence=held.fence)   # pass the fence to whatever you write to

Contract:

- **Acquire**: one script does ``SET <lock> <random token> NX PX ttl`` and, only when that
  succeeded, ``INCR <lock>:fence``; the new value is ``held.fence``. Fences strictly increase
  per resource across every acquisition by anyone, so a storage that remembers the highest
  fence it has seen can refuse a write from a holder that lost the lock while paused.
  A taken lock is retried with exponential backoff and jitter until ``timeout`` seconds have
  passed (``0`` = one attempt, ``None`` = wait for ever), then `LockNotAcquiredError`.
- **Renew**: while the body runs, a background task extends the lease every ``ttl / 3``
  with compare-and-extend (``PEXPIRE`` only while the key still holds our token).
- **Lost**: the lock is lost when an extension finds another token or none (the lease
  expired: the process was paused, or renewal was disabled with ``renew=False``), or when
  Redis cannot be reached until the lease we last confirmed runs out. The holder learns at
  once: ``held.lost`` becomes true, ``held.lost_event`` is set, the body's task is cancelled
  (unless ``cancel_on_loss=False``) and the ``async with`` raises `LockLostError` — also when
  the body swallowed the cancellation or already finished when the release finds a stranger's
  token. A cancellation that came from elsewhere at the same time is propagated unchanged.
- **Release**: compare-and-delete (``DEL`` only while the key holds our token), shielded,
  so it runs also when the task is cancelled, and never deletes another holder's lock.

Keys: `Keys.lock(resource)` and `Keys.lock_fence(resource)`, which share the resource's hash
tag. The fence counter has no TTL: it must never go back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from types import TracebackType
from typing import Final

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.connections import RedisClient
from shared.errors import LockLostError, LockNotAcquiredError
from shared.keys import Keys

logger = logging.getLogger(__name__)

_ACQUIRE: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""
_EXTEND: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

BACKOFF_BASE: Final = 0.01
BACKOFF_CAP: Final = 0.5


class Held:
    """What the holder gets: the fencing number and whether the lock is still ours."""

    def __init__(self, resource: str, token: str, fence: int, ttl: float) -> None:
        self.resource = resource
        self.token = token
        self.fence = fence
        self.ttl = ttl
        self.lost_event = asyncio.Event()
        # Local monotonic time until which the last confirmed lease certainly runs.
        self.valid_until = time.monotonic() + ttl

    @property
    def lost(self) -> bool:
        return self.lost_event.is_set()


class Lock:
    """`async with Lock(...) as held`; single use. See the module docstring; build with `lock()`."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        resource: str,
        *,
        ttl: float = 10.0,
        timeout: float | None = 10.0,
        renew: bool = True,
        cancel_on_loss: bool = True,
        backoff: tuple[float, float] = (BACKOFF_BASE, BACKOFF_CAP),
    ) -> None:
        if ttl < 0.01:
            raise ValueError("ttl must be at least 10 ms")
        self.redis = redis
        self.resource = resource
        self.key = keys.lock(resource)
        self.fence_key = keys.lock_fence(resource)
        self.ttl = ttl
        self.timeout = timeout
        self.renew = renew
        self.cancel_on_loss = cancel_on_loss
        self.backoff = backoff
        self._acquire = redis.register_script(_ACQUIRE)
        self._extend = redis.register_script(_EXTEND)
        self._release = redis.register_script(_RELEASE)
        self._held: Held | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._body: asyncio.Task[object] | None = None
        self._cancelled_body = False
        self._exiting = False

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    async def acquire(self) -> Held:
        """Take the lock or raise `LockNotAcquiredError` after `timeout` seconds."""
        token = secrets.token_hex(16)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        attempt = 0
        while True:
            started = time.monotonic()
            fence = await self._try_acquire(token)
            if fence:
                held = Held(self.resource, token, fence, self.ttl)
                held.valid_until = started + self.ttl
                return held
            delay = _backoff(attempt, *self.backoff)
            attempt += 1
            if deadline is not None and time.monotonic() + delay > deadline:
                raise LockNotAcquiredError(
                    f"lock {self.resource!r} is held elsewhere; gave up after {attempt} attempts"
                )
            await asyncio.sleep(delay)

    async def _try_acquire(self, token: str) -> int:
        keys = [self.key, self.fence_key]
        try:
            return int(await self._acquire(keys=keys, args=[token, self._ttl_ms]))
        except (asyncio.CancelledError, RedisTimeoutError):
            # Redis may have run the script before we stopped listening: free what we may hold.
            await asyncio.shield(self._release_token(token))
            raise

    async def _release_token(self, token: str) -> bool | None:
        """True: released; False: the key did not hold our token; None: Redis did not answer."""
        try:
            return bool(await self._release(keys=[self.key], args=[token]))
        except (RedisError, OSError):
            # The lease expires by itself within its TTL; nothing else to do.
            logger.warning("could not release lock %s; it expires within its TTL", self.key)
            return None

    async def __aenter__(self) -> Held:
        self._body = asyncio.current_task()
        self._held = await self.acquire()
        self._watcher = asyncio.create_task(self._watch(self._held), name=f"lock:{self.key}")
        return self._held

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        held = self._held
        assert held is not None, "__aexit__ without __aenter__"
        self._exiting = True  # from here on the watcher must not cancel us
        await self._stop_watcher()
        # Shielded: a second cancellation must not stop the release half-way.
        released = await asyncio.shield(self._release_token(held.token))
        if released is False or (released is None and time.monotonic() >= held.valid_until):
            # The key held a stranger's token or none: the body ran (partly) unprotected.
            held.lost_event.set()
        ours = self._uncancel()
        if held.lost:
            if exc_type is asyncio.CancelledError and not ours:
                return False  # an outside cancellation wins; don't turn it into our error
            raise LockLostError(f"lock {self.resource!r} was lost while held") from exc
        return False

    def _uncancel(self) -> bool:
        """Undo our own cancellation of the body; True when it was the only one."""
        if not self._cancelled_body or self._body is None:
            return False
        return self._body.uncancel() == 0

    async def _stop_watcher(self) -> None:
        watcher = self._watcher
        if watcher is None:
            return
        watcher.cancel()
        # wait(), not `await watcher`: its CancelledError must not be mistaken for ours.
        await asyncio.wait([watcher])

    async def _watch(self, held: Held) -> None:
        interval = self.ttl / 3
        while True:
            now = time.monotonic()
            wake = held.valid_until if not self.renew else min(now + interval, held.valid_until)
            await asyncio.sleep(max(0.0, wake - now))
            if time.monotonic() >= held.valid_until:
                self._lose(held, "lease ran out before it could be renewed")
                return
            if self.renew and not await self._renew_once(held):
                return

    async def _renew_once(self, held: Held) -> bool:
        started = time.monotonic()
        try:
            extended = await self._extend(keys=[self.key], args=[held.token, self._ttl_ms])
        except (RedisError, OSError) as exc:
            logger.warning("lock %s renewal failed (%s); retrying", self.key, type(exc).__name__)
            return True
        if not extended:
            self._lose(held, "another holder took it, or it expired")
            return False
        held.valid_until = started + self.ttl
        return True

    def _lose(self, held: Held, why: str) -> None:
        logger.warning("lock %s lost: %s", self.key, why)
        held.lost_event.set()
        if self.cancel_on_loss and not self._exiting and self._body is not None:
            self._cancelled_body = True
            self._body.cancel(msg=f"lock {self.resource!r} lost")


def lock(
    redis: RedisClient,
    keys: Keys,
    resource: str,
    *,
    ttl: float = 10.0,
    timeout: float | None = 10.0,
    renew: bool = True,
    cancel_on_loss: bool = True,
    backoff: tuple[float, float] = (BACKOFF_BASE, BACKOFF_CAP),
) -> Lock:
    """`async with lock(redis, keys, "warmup", ttl=30) as held:` — see the module docstring.

    `resource` is letters, digits and `_.:-` (it becomes part of the key). `backoff` is the
    (first, longest) wait in seconds between attempts while the lock is taken.
    """
    return Lock(
        redis,
        keys,
        resource,
        ttl=ttl,
        timeout=timeout,
        renew=renew,
        cancel_on_loss=cancel_on_loss,
        backoff=backoff,
    )


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped."""
    ceiling = min(cap, base * (1 << min(attempt, 20)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
