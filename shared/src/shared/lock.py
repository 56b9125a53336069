"""A Redis lock with a fencing number, renewal while held, loss detection, and the fencing
check a storage uses to refuse a holder that lost the lock.

Usage::

    from shared.lock import FencedStore, lock

    store = FencedStore(redis, keys, "report")
    async with lock(redis, keys, "report", ttl=30.0, replicas=replica_wait) as held:
        if not (await store.set("latest", body, held.fence)).written:
            ...  # a newer holder has written: we are stale, stop

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
- **Fenced writes** (`FencedStore`): one script writes `Keys.lock_data(resource, name)` only
  when the writer's fence is at least the highest fence the resource's writes were accepted
  with (`Keys.lock_fence_seen(resource)`), and records it. Equal is accepted (one holder
  writes many times); lower is refused and nothing changes. A stale holder is refused from
  the new holder's first fenced write on. A storage elsewhere (a database row) makes the
  same comparison in the same transaction as its write.

**Failover** (`replicas=`, a `shared.replication.ReplicaWait`). Replication is asynchronous:
the `INCR` of the fence may not have reached the replica when the primary dies, and the
replica promoted in its place then hands the next holder the *same* fence (or a lower one) —
and no storage can tell the old holder from the new one. With `replicas`, the acquisition
script is followed by `WAIT 1 <timeout>` on its connection, and it counts only when

- a replica confirmed it (`CONFIRMED`): the promoted replica has the fence and the token;
- or there was nothing to wait for: no replica connected at the primary's last count, at
  most 5 s old (`NO_REPLICA`: a lone server, or a replica that has gone), waiting turned
  off (`OFF`, a timeout of 0), or a cluster write the client routed itself (`UNCHECKED`:
  the slot is moving or the node unreachable; or written but `WAIT`'s answer lost). These
  are the degraded cases, granted as without `replicas`: a failover in such a window may
  repeat a fence (a replica that was cut off can still be promoted). A lone server has
  nobody to fail over to; the others are what a deployment without a healthy replica gets.

When no replica confirms in time (`TIMED_OUT`), the lock is released at once
(compare-and-delete with our token) and the attempt counts as failed: retried with the
backoff until `timeout`, then `LockNotAcquiredError` says no replica confirmed. The fence
number it took is skipped, which is harmless: fences must only increase.

`ReplicaWait` normally does not wait on a primary whose replica let a `WAIT` time out until
its next count (5 s): a stalled replica costs one write the timeout, the next ones go
unconfirmed as `NO_REPLICA`. For the lock that would turn the retry after a `TIMED_OUT` into
a grant of exactly the fence the wait was there to protect, so the lock asks with
`wait_stalled=True`: every attempt waits while a replica is counted, and each costs the
timeout while the replica is stalled. A lock is taken rarely; a silently unsafe fence is
worse than a slower refusal. Renewals and the release are not waited for: a lost renewal
shortens the lease on the promoted replica, so another holder may get the lock early — with a
higher fence, which the fencing check is there for.

Keys: `Keys.lock(resource)` and `Keys.lock_fence(resource)`, and for fenced writes
`Keys.lock_data(resource, name)` and `Keys.lock_fence_seen(resource)`: all share the
resource's hash tag (one slot). The fence counter and the highest fence seen have no TTL:
they must never go back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from shared.connections import RedisClient
from shared.errors import LockLostError, LockNotAcquiredError
from shared.keys import Keys
from shared.replication import Replication, ReplicaWait

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
# KEYS: the value, the highest fence seen; ARGV: fence, value, TTL in ms (0: none).
# Fences are INCR's integers, exact in Lua's numbers up to 2^53.
_FENCED_SET: Final = """
local fence = tonumber(ARGV[1])
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
if fence < seen then
  return 0
end
if fence > seen then
  redis.call('SET', KEYS[2], ARGV[1])
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""
# What an attempt returns when it took the lock but no replica confirmed it (released).
_UNCONFIRMED: Final = -1

BACKOFF_BASE: Final = 0.01
BACKOFF_CAP: Final = 0.5


class Held:
    """What the holder gets: the fencing number and whether the lock is still ours.

    `replication`: what was known of a replica's copy of the fence when it was granted
    (`CONFIRMED`, or a degraded case; `OFF` for a lock without `replicas`).
    """

    def __init__(
        self,
        resource: str,
        token: str,
        fence: int,
        ttl: float,
        replication: Replication = Replication.OFF,
    ) -> None:
        self.resource = resource
        self.token = token
        self.fence = fence
        self.ttl = ttl
        self.replication = replication
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
        replicas: ReplicaWait | None = None,
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
        self.replicas = replicas
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
        attempt = unconfirmed = 0
        while True:
            started = time.monotonic()
            fence, replication = await self._try_acquire(token)
            if fence > 0:
                held = Held(self.resource, token, fence, self.ttl, replication)
                held.valid_until = started + self.ttl
                return held
            unconfirmed += fence == _UNCONFIRMED
            delay = _backoff(attempt, *self.backoff)
            attempt += 1
            if deadline is not None and time.monotonic() + delay > deadline:
                raise LockNotAcquiredError(self._why(attempt, unconfirmed))
            await asyncio.sleep(delay)

    def _why(self, attempts: int, unconfirmed: int) -> str:
        if not unconfirmed:
            return f"lock {self.resource!r} is held elsewhere; gave up after {attempts} attempts"
        assert self.replicas is not None
        return (
            f"lock {self.resource!r}: no replica confirmed the acquisition within "
            f"{self.replicas.timeout_ms} ms ({unconfirmed} of {attempts} attempts; its fence "
            f"could be handed out again after a failover); gave up after {attempts} attempts"
        )

    async def _try_acquire(self, token: str) -> tuple[int, Replication]:
        """The fence taken; 0: the lock is held elsewhere; `_UNCONFIRMED`: taken, but no
        replica confirmed it in time, so released again."""
        keys = [self.key, self.fence_key]
        args: list[EncodableT] = [token, self._ttl_ms]
        try:
            if self.replicas is None:
                return int(await self._acquire(keys=keys, args=args)), Replication.OFF
            acked = await self.replicas.run(self._acquire, keys, args, wait_stalled=True)
        except (asyncio.CancelledError, RedisTimeoutError):
            # Redis may have run the script before we stopped listening: free what we may hold.
            await asyncio.shield(self._release_token(token))
            raise
        fence = int(acked.reply)
        if fence and acked.replication is Replication.TIMED_OUT:
            # Debug only: `shared.replication` warns once per primary, the error says it all.
            logger.debug(
                "lock %s: no replica confirmed fence %d within %d ms; released",
                self.key, fence, self.replicas.timeout_ms,
            )  # fmt: skip
            await asyncio.shield(self._release_token(token))
            return _UNCONFIRMED, acked.replication
        return fence, acked.replication

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
    replicas: ReplicaWait | None = None,
) -> Lock:
    """`async with lock(redis, keys, "warmup", ttl=30) as held:` — see the module docstring.

    `resource` is letters, digits and `_.:-` (it becomes part of the key). `backoff` is the
    (first, longest) wait in seconds between attempts while the lock is taken. `replicas`
    (a `ReplicaWait` on `redis`): an acquisition counts only once a replica holds its fence,
    so a failover cannot hand the same fence out twice (module docstring, "Failover").
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
        replicas=replicas,
    )


@dataclass(frozen=True, slots=True)
class Fenced:
    """What a fenced write did: `written`, False when a higher fence was seen first (the
    writer is stale: nothing changed); `replication`, `OFF` without a `ReplicaWait`."""

    written: bool
    replication: Replication


class FencedStore:
    """Values of one resource that only its current lock holder can write: the fencing check.

    `set(name, value, fence)` writes `Keys.lock_data(resource, name)` when `fence` is at least
    the highest fence any write of the resource was accepted with, and records it as the
    highest (`Keys.lock_fence_seen(resource)`); one script, one slot, so it is atomic on
    Redis Cluster too. The record of the highest fence is a write like any other: with
    `replicas`, each write is followed by `WAIT` (`shared.replication`), and `Fenced` says
    whether a replica holds it — without one, a failover may forget the fences seen since the
    replica's copy, and with them the refusal of a holder older than those.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        resource: str,
        *,
        replicas: ReplicaWait | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.resource = resource
        self.seen_key = keys.lock_fence_seen(resource)
        self.replicas = replicas
        self._set = redis.register_script(_FENCED_SET)

    async def set(
        self, name: str, value: EncodableT, fence: int, *, ttl: float | None = None
    ) -> Fenced:
        """Write `value` under `name` if `fence` is not stale; `ttl` in seconds (None: none)."""
        if fence < 1:
            raise ValueError("a fence is a positive integer (Held.fence)")
        ttl_ms = 0 if ttl is None else max(1, int(ttl * 1000))
        keys = [self.keys.lock_data(self.resource, name), self.seen_key]
        args: list[EncodableT] = [fence, value, ttl_ms]
        if self.replicas is None:
            return Fenced(bool(await self._set(keys=keys, args=args)), Replication.OFF)
        acked = await self.replicas.run(self._set, keys, args)
        return Fenced(bool(acked.reply), acked.replication)

    async def get(self, name: str) -> bytes | None:
        value: bytes | str | None = await self.redis.get(self.keys.lock_data(self.resource, name))
        return value.encode() if isinstance(value, str) else value

    async def highest(self) -> int:
        """The highest fence a write was accepted with; 0 before the first."""
        return int(await self.redis.get(self.seen_key) or 0)


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped."""
    ceiling = min(cap, base * (1 << min(attempt, 20)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
