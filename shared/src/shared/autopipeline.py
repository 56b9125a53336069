"""Auto-pipelining: commands issued by concurrent tasks share one round trip (like ioredis).

`await auto_pipeline(redis).execute("GET", key)` queues the command and returns its reply.
One drain task per client writes every queued command (up to `max_batch`) to one dedicated
connection in a single send, reads the replies in order and hands each to its caller; the
commands that arrive meanwhile form the next batch. Under load a batch holds what the
concurrent requests issued while the previous one was on the wire, so N requests cost one
round trip (one write, one read syscall, one pool-free exchange) instead of N; a lone caller
pays no wait — its command goes out as soon as the loop runs the drain task.

Semantics kept from a plain call:
- Per-command errors: a command's error reply (`NOSCRIPT`, `WRONGTYPE`, ...) is raised to its
  own caller only; the others in the batch get their replies.
- Connection failures and timeouts fail every command of the batch with the redis-py error,
  after the connection's own `Retry` policy (the same as redis-py's pipelines: the batch is
  re-sent on a fresh connection), so breakers and fail-open callers see what they saw before.
- A caller cancelled before its batch is written is dropped from it; one cancelled after
  simply ignores the reply (the connection stays in sync: every reply is read).

Replies are raw (no redis-py response callbacks): use it for commands whose raw reply is what
the caller wants (GET, EVALSHA). The dedicated connection is taken from the client's pool
once and never returned: `Redis.aclose()` closes it with the pool; a client whose pool has
a single connection is not pipelined (plain calls), so it never starves its other users.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

MAX_BATCH: Final = 128

_Queued = tuple[tuple[EncodableT, ...], "asyncio.Future[Any]"]
_PIPELINES: weakref.WeakKeyDictionary[Redis, AutoPipeline] = weakref.WeakKeyDictionary()


def auto_pipeline(redis: Redis) -> AutoPipeline:
    """The client's shared auto-pipeline: every user of one client coalesces together."""
    pipeline = _PIPELINES.get(redis)
    if pipeline is None:
        pipeline = _PIPELINES[redis] = AutoPipeline(redis)
    return pipeline


class AutoPipeline:
    def __init__(self, redis: Redis, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.redis = redis
        self.max_batch = max_batch
        self.batches = 0  # round trips made (for tests and benchmarks)
        self.commands = 0  # commands sent
        self.largest_batch = 0
        self._queue: deque[_Queued] = deque()
        self._busy = False  # a round trip is on the wire; whoever runs it drains the queue
        self._conn: AbstractConnection | None = None
        self._drains: set[asyncio.Task[None]] = set()
        # Holding the only connection of a one-connection pool would starve every other
        # command of the client: such a client gets plain calls, no pipelining.
        pool_size = getattr(redis.connection_pool, "max_connections", 2)
        self._shared_pool_too_small = pool_size < 2

    async def execute(self, *args: EncodableT) -> Any:
        """Send one command with the others queued in this tick; its raw reply."""
        if self._shared_pool_too_small:
            # redis-py leaves execute_command unannotated.
            return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        if not self._busy:
            return await self._alone(args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        return await future

    async def _alone(self, args: tuple[EncodableT, ...]) -> Any:
        # Nothing on the wire: send at once from the caller's own task (no hop through the
        # drain task). Commands queued meanwhile go out together when this one is answered.
        # A cancellation here only costs this caller's reply (redis-py drops the connection).
        self._busy = True
        try:
            conn = await self._connection()
            replies = await conn.retry.call_with_retry(
                lambda: _send(conn, [args]), lambda _error: conn.disconnect()
            )
        finally:
            self._busy = False
            self._start_drain()
        self.batches += 1
        self.commands += 1
        self.largest_batch = max(self.largest_batch, 1)
        if isinstance(replies[0], ResponseError):
            raise replies[0]
        return replies[0]

    def _start_drain(self) -> None:
        if self._queue and not self._busy:
            self._busy = True
            task = asyncio.get_running_loop().create_task(self._run())
            self._drains.add(task)  # a strong reference until done
            task.add_done_callback(self._drains.discard)

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._round_trip(batch)
        finally:
            self._busy = False
            # Only reached with work left when this task itself was cancelled (loop shutdown).
            _fail(self._take_all(), asyncio.CancelledError())

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            pool = self.redis.connection_pool
            # redis-py leaves get_connection unannotated.
            self._conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        return self._conn

    def _take(self) -> list[_Queued]:
        batch: list[_Queued] = []
        queue = self._queue
        while queue and len(batch) < self.max_batch:
            item = queue.popleft()
            if not item[1].done():  # a cancelled caller's command is not sent
                batch.append(item)
        return batch

    def _take_all(self) -> list[_Queued]:
        items = list(self._queue)
        self._queue.clear()
        return items

    async def _round_trip(self, batch: list[_Queued]) -> None:
        try:
            conn = await self._connection()
            replies = await conn.retry.call_with_retry(
                lambda: _send(conn, [args for args, _ in batch]), lambda _error: conn.disconnect()
            )
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.commands += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)


async def _send(conn: AbstractConnection, commands: list[tuple[EncodableT, ...]]) -> list[Any]:
    await _write(conn, _pack(conn.encoder.encode, commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # an error reply: the connection is still in sync
            replies.append(exc)
    return replies


def _pack(encode: Callable[[Any], bytes], commands: list[tuple[EncodableT, ...]]) -> list[bytes]:
    """RESP arrays of bulk strings; what `pack_commands` does, at a fraction of its cost.

    (redis-py's packer checks every argument several times over and splits the command name
    on spaces: our command names are single words.) Arguments encode as redis-py encodes them.
    """
    packed: list[bytes] = []
    for args in commands:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if type(arg) is bytes else encode(arg)
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
        packed.append(b"".join(parts))
    return packed


async def _write(conn: AbstractConnection, packed: list[bytes]) -> None:
    """`send_packed_command` without its per-call `asyncio.wait_for`.

    On Python 3.11 `wait_for` wraps the write in a new task on every call — the largest
    single cost of a sequential command. The write itself never blocks; only `drain()` can
    wait, and only when the socket did not take everything, so that is when the timeout is
    armed (`asyncio.timeout`, no task). A lost connection surfaces on the read that follows.
    Errors map as redis-py maps them. Falls back to redis-py's own path to connect, or if its
    internals ever change.
    """
    writer: asyncio.StreamWriter | None = getattr(conn, "_writer", None)
    if writer is None or not conn.is_connected:
        await conn.send_packed_command(packed, check_health=False)
        return
    if writer.transport.is_closing():
        await conn.disconnect(nowait=True)
        raise RedisConnectionError("Error while writing to socket: the connection is closing")
    try:
        writer.writelines(packed)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
    except BaseException:
        await conn.disconnect(nowait=True)  # a half-written command: the socket is unusable
        raise


def _fail(batch: list[_Queued], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
