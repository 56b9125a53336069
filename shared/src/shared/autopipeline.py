"""Auto-pipelining: commands issued by concurrent tasks share one round trip (like ioredis).

`await auto_pipeline(redis).execute("GET", key)` sends the command and returns its raw reply.
Each client has one dedicated connection for this, driven by its own asyncio protocol
(`_Link`) instead of redis-py's stream reader: a lone command is written at once from the
caller's task; commands that arrive while a batch is on the wire queue up, and the moment
the batch's last reply is parsed (inside the protocol's `data_received`, with hiredis) the
queue goes out as the next batch, up to `max_batch` commands in one write. Under load N
requests cost one round trip instead of N; a lone caller pays no wait. Reading replies in
the protocol callback, rather than through `StreamReader.read` and redis-py's per-read
`asyncio.timeout`, saves about a third of the client's CPU per command (bench/limiter.py
prints the gap as "raw GET, auto-pipeline" against a raw redis-py GET).

Semantics kept from a plain redis-py call:
- The handshake (AUTH/ACL, SELECT, client name, TLS) is redis-py's own: the connection is
  taken from the client's pool and connected by redis-py, then its transport is handed to
  the `_Link` (the stream protocol stays behind it, so redis-py can still close it).
- Per-command errors: a command's error reply (`NOSCRIPT`, `WRONGTYPE`, ...) is raised to its
  own caller only, as the exception class redis-py maps it to; the others get their replies.
- A read timeout (the client's `socket_timeout`) or a lost connection fails every command on
  the wire and queued behind it with redis-py's `TimeoutError` / `ConnectionError`; each
  caller then retries under the connection's own `Retry` policy on a fresh connection,
  like a plain call. The timeout costs no timer per command: one watchdog timer at a time,
  re-armed for the batch on the wire when it fires.
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
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from shared import redispy

MAX_BATCH: Final = 128
CLOSED_BY_SERVER: Final = "Connection closed by server."  # redis-py's wording

_Queued = tuple[tuple[EncodableT, ...], "asyncio.Future[Any]"]
_PIPELINES: weakref.WeakKeyDictionary[Redis, AutoPipeline] = weakref.WeakKeyDictionary()


def auto_pipeline(redis: Redis | RedisCluster) -> AutoPipeline:
    """The client's shared auto-pipeline: every user of one client coalesces together."""
    if not isinstance(redis, Redis):
        raise TypeError("the auto-pipeline drives one server's connection, not a cluster client")
    pipeline = _PIPELINES.get(redis)
    if pipeline is None:
        pipeline = _PIPELINES[redis] = AutoPipeline(redis)
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
        self._link: _Link | None = None
        self._opening: asyncio.Future[_Link | None] | None = None
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

    async def _opened(self) -> _Link | None:
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

    def _opened_done(self, opening: asyncio.Future[_Link | None]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            self._link = opening.result()

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            self._conn = await redispy.checkout(self._pool)
        return self._conn

    async def _open(self) -> _Link | None:
        """Connect the dedicated connection (redis-py's handshake) and take over its transport."""
        conn = await self._connection()
        writer = redispy.stream_writer(conn)
        if writer is not None and (
            writer.transport.is_closing() or isinstance(writer.transport.get_protocol(), _Link)
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
        transport = writer.transport
        link = _Link(self, transport, transport.get_protocol(), conn)
        transport.set_protocol(link)
        return link

    async def _drop(self, _error: Exception) -> None:
        """After a failure: a closed link's connection is disconnected, to reconnect."""
        link = self._link
        if link is not None and not link.open:
            self._link = None
            if self._conn is not None:
                await self._conn.disconnect(nowait=True)


class _Link(asyncio.Protocol):
    """The dedicated connection's protocol: writes batches, hands replies out in order."""

    def __init__(
        self,
        pipeline: AutoPipeline,
        transport: asyncio.BaseTransport,
        inner: asyncio.BaseProtocol,
        conn: AbstractConnection,
    ) -> None:
        self.open = True
        self._pipeline = pipeline
        self._transport: Any = transport  # a WriteTransport; typed loosely for set_protocol
        self._inner = inner  # redis-py's stream protocol: told when the connection closes
        self._encode: Callable[[Any], bytes] = conn.encoder.encode
        self._timeout: float | None = conn.socket_timeout
        self._loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {
            "protocolError": InvalidResponse,
            "replyError": redispy.error_parser(conn),
        }
        if conn.encoder.decode_responses:
            kwargs["encoding"] = conn.encoder.encoding
            kwargs["errors"] = conn.encoder.encoding_errors
        self._reader = hiredis.Reader(**kwargs)
        self._waiting: deque[asyncio.Future[Any]] = deque()  # replies due, in order
        self._queue: deque[_Queued] = deque()  # the next batch
        self._deadline = 0.0  # the batch on the wire times out then
        self._watchdog: asyncio.TimerHandle | None = None

    def submit(self, args: tuple[EncodableT, ...]) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        if self._waiting:
            self._queue.append((args, future))
        else:
            self._write([(args, future)])
        return future

    def _write(self, batch: list[_Queued]) -> None:
        encode = self._encode
        parts: list[bytes] = []
        waiting = self._waiting
        for args, future in batch:
            # RESP arrays of bulk strings: what `pack_commands` does, at a fraction of its
            # cost (our command names are single words; arguments encode as redis-py's).
            parts.append(b"*%d\r\n" % len(args))
            for arg in args:
                data = arg if type(arg) is bytes else encode(arg)
                parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
            waiting.append(future)
        self._transport.write(b"".join(parts))
        pipeline = self._pipeline
        pipeline.batches += 1
        pipeline.commands += len(batch)
        pipeline.largest_batch = max(pipeline.largest_batch, len(batch))
        if self._timeout is not None:
            self._deadline = self._loop.time() + self._timeout
            if self._watchdog is None:
                self._watchdog = self._loop.call_at(self._deadline, self._check_deadline)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while waiting:
            reply = reader.gets()
            if reply is False:  # hiredis: not enough data yet
                return
            future = waiting.popleft()
            if future.done():  # its caller was cancelled: the reply is read and dropped
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        self._next_batch()

    def _next_batch(self) -> None:
        queue = self._queue
        batch: list[_Queued] = []
        limit = self._pipeline.max_batch
        while queue and len(batch) < limit:
            item = queue.popleft()
            if not item[1].done():  # a cancelled caller's command is not sent
                batch.append(item)
        if batch:
            self._write(batch)

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting or not self.open:
            return
        if self._loop.time() < self._deadline:
            self._watchdog = self._loop.call_at(self._deadline, self._check_deadline)
            return
        # The reply is late: the connection is out of step, so it is closed.
        self._fail(RedisTimeoutError("Timeout reading from socket"))
        self._transport.abort()

    def eof_received(self) -> bool:
        self._inner.eof_received()  # type: ignore[attr-defined]
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            error = RedisConnectionError(CLOSED_BY_SERVER)
        else:
            error = RedisConnectionError(f"Error while reading from socket: {exc}")
        self._fail(error)
        self._inner.connection_lost(exc)

    def _fail(self, error: Exception) -> None:
        self.open = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending = list(self._waiting) + [future for _, future in self._queue]
        self._waiting.clear()
        self._queue.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)
