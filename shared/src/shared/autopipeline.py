"""Auto-pipelining: commands issued by concurrent tasks share one round trip (like ioredis).

`await auto_pipeline(client).execute("GET", key)` sends the command and returns its raw reply,
whatever the topology: for a `Redis` (a standalone server, or the master a Sentinel set names)
an `AutoPipeline` on one dedicated connection; for a `RedisCluster` a
`shared.clusterpipeline.ClusterAutoPipeline`, one such connection per primary with each
command routed by its key's slot. The connection is driven by `shared.pipelink.Link`: a lone
command is written at once from the caller's task, and commands that arrive while a batch is
on the wire go out together the moment its last reply is read. Under load N requests cost
one round trip instead of N; a lone caller pays no wait.

Semantics kept from a plain redis-py call (`AutoPipeline`):
- The handshake (AUTH/ACL, SELECT, client name, TLS) is redis-py's own: the connection is
  taken from the client's pool and connected by redis-py, then its transport is handed to
  the link (the stream protocol stays behind it, so redis-py can still close it).
- Per-command errors: a command's error reply (`NOSCRIPT`, `WRONGTYPE`, ...) is raised to its
  own caller only, as the exception class redis-py maps it to; the others get their replies.
- A read timeout (the client's `socket_timeout`) or a lost connection fails every command on
  the wire and queued behind it with redis-py's `TimeoutError` / `ConnectionError`; each
  caller then retries under the connection's own `Retry` policy on a fresh connection,
  like a plain call. The timeout costs no timer per command: one watchdog timer at a time,
  re-armed for the batch on the wire when it fires.
- Sentinel: a reconnect asks the sentinels where the master is (`redispy.connect_once`), so
  the pipeline follows a promotion; a `READONLY` reply (the server it is on was demoted)
  drops the connection and retries like a lost connection, as redis-py's Sentinel
  connection does.
- A caller cancelled before its batch is written is dropped from it; one cancelled after
  simply ignores the reply (every reply is read: the connection stays in sync).

Replies are raw (no redis-py response callbacks): use it for commands whose raw reply is what
the caller wants (GET, EVALSHA). The dedicated connection is taken from the client's pool
once and never returned: `Redis.aclose()` closes it with the pool. A client whose pool has a
single connection, or whose connection class has no asyncio transport, is not pipelined
(plain calls), so it never starves its other users.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import Any, TypeAlias, overload

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from shared import redispy
from shared.clusterpipeline import ClusterAutoPipeline
from shared.pipelink import MAX_BATCH, Link

DEMOTED = "The master this connection was on is now a replica."

# What `auto_pipeline` gives: both have `execute(*args)` and the same counters.
Pipeline: TypeAlias = "AutoPipeline | ClusterAutoPipeline"

_PIPELINES: weakref.WeakKeyDictionary[Redis | RedisCluster, Pipeline] = weakref.WeakKeyDictionary()


@overload
def auto_pipeline(client: Redis) -> AutoPipeline: ...
@overload
def auto_pipeline(client: RedisCluster) -> ClusterAutoPipeline: ...
@overload
def auto_pipeline(client: Redis | RedisCluster) -> Pipeline: ...
def auto_pipeline(client: Redis | RedisCluster) -> Pipeline:
    """The client's shared auto-pipeline: every user of one client coalesces together."""
    pipeline = _PIPELINES.get(client)
    if pipeline is None:
        if isinstance(client, RedisCluster):
            pipeline = ClusterAutoPipeline(client)
        else:
            pipeline = AutoPipeline(client)
        _PIPELINES[client] = pipeline
    return pipeline


class AutoPipeline:
    def __init__(self, redis: Redis, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        # A weak reference: the registry maps client -> pipeline weakly, and a strong one here
        # would keep every client (and its pipeline) alive for good.
        self._redis = weakref.ref(redis)
        self._pool = redis.connection_pool
        self.max_batch = max_batch
        self.batches = 0  # round trips made (for tests and benchmarks)
        self.commands = 0  # commands sent
        self.largest_batch = 0
        self._conn: AbstractConnection | None = None
        self._link: Link | None = None
        self._opening: asyncio.Future[Link | None] | None = None
        # A Sentinel master's client: READONLY means the server was demoted under us.
        self._follows_master = isinstance(redis.connection_pool, SentinelConnectionPool)
        # Holding the only connection of a one-connection pool would starve every other
        # command of the client: such a client gets plain calls, no pipelining.
        pool_size = getattr(redis.connection_pool, "max_connections", 2)
        self._plain = pool_size < 2

    @property
    def redis(self) -> Redis:
        redis = self._redis()
        if redis is None:
            raise RuntimeError("the Redis client of this auto-pipeline is gone")
        return redis

    async def execute(self, *args: EncodableT) -> Any:
        """Send one command with the others queued meanwhile; its raw reply."""
        link = self._link
        if link is not None and link.open:
            try:
                return await link.submit(args)
            except (RedisConnectionError, RedisTimeoutError) as error:
                return await self._retry(args, error)
            except ReadOnlyError:
                if not self._follows_master:
                    raise
                return await self._retry(args, self._demoted(link))
        if self._plain:
            # redis-py leaves execute_command unannotated.
            return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        return await self._retry(args, None)

    async def _retry(self, args: tuple[EncodableT, ...], failed: Exception | None) -> Any:
        """The command under the connection's `Retry` policy; `failed`: a first attempt's error."""
        if self._conn is None:  # first use: the pool hands out a connected one (its own retries)
            link = await self._opened()
            if link is None:
                return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        assert self._conn is not None
        first = [failed] if failed is not None else []

        def attempt() -> Awaitable[Any]:
            if first:  # the attempt already made counts as the policy's first
                raise first.pop()
            return self._submit(args)

        return await self._conn.retry.call_with_retry(attempt, self._drop)

    def _demoted(self, link: Link) -> RedisConnectionError:
        # Sentinel demotes a master with the clients still connected (it kills them only
        # after), so a command can meet READONLY first: treat it as a lost connection.
        error = RedisConnectionError(DEMOTED)
        if link.open:
            link.close(error)
        return error

    def _submit(self, args: tuple[EncodableT, ...]) -> Awaitable[Any]:
        link = self._link
        if link is not None and link.open:
            return link.submit(args)
        return self._submit_when_open(args)

    async def _submit_when_open(self, args: tuple[EncodableT, ...]) -> Any:
        link = await self._opened()
        if link is None:
            return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        return await link.submit(args)

    async def _opened(self) -> Link | None:
        """The open link; every caller that needs a (re)connect waits on the same one.

        Callers resume in the order they asked, so their commands keep their order. A
        cancelled caller leaves the connect running for the others.
        """
        link = self._link
        if link is not None and link.open:
            return link
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._open())
            opening.add_done_callback(self._opened_done)
        return await asyncio.shield(opening)

    def _opened_done(self, opening: asyncio.Future[Link | None]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            self._link = opening.result()

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            self._conn = await redispy.checkout(self._pool)
        return self._conn

    async def _open(self) -> Link | None:
        """Connect the dedicated connection (redis-py's handshake) and take over its transport."""
        conn = await self._connection()
        writer = redispy.stream_writer(conn)
        if writer is not None and (
            writer.transport.is_closing() or isinstance(writer.transport.get_protocol(), Link)
        ):
            await conn.disconnect(nowait=True)  # the link's old socket: start afresh
        if not conn.is_connected:
            await redispy.connect_once(conn)
        writer = redispy.stream_writer(conn)
        if writer is None:  # a connection class without an asyncio stream: plain calls
            self._plain = True
            await self._pool.release(conn)
            self._conn = None
            return None
        return Link.attach(self, conn)

    async def _drop(self, _error: Exception) -> None:
        """After a failure: a closed link's connection is disconnected, to reconnect."""
        link = self._link
        if link is not None and not link.open:
            self._link = None
            if self._conn is not None:
                await self._conn.disconnect(nowait=True)
