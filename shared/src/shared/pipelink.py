"""One auto-pipelined connection: the asyncio protocol that writes batches and reads replies.

`Link` replaces redis-py's stream protocol on a connection that redis-py connected (its
handshake: AUTH/ACL, SELECT, client name, TLS). A lone command is written at once from the
caller's task; commands that arrive while a batch is on the wire queue up, and the moment
the batch's last reply is parsed (inside `data_received`, with hiredis) the queue goes out as
the next batch, up to the owner's `max_batch` commands in one write. Reading replies in the
protocol callback, rather than through `StreamReader.read` and redis-py's per-read
`asyncio.timeout`, saves about a third of the client's CPU per command.

Its owner (`shared.autopipeline.AutoPipeline` for one server, `shared.clusterpipeline`'s
router for a cluster, one link per primary) decides when to connect, retry or fall back; the
link only reports: an error reply fails its own command (as redis-py's exception class); a
read timeout or a lost connection fails every command on the wire and queued behind it
(redis-py's `TimeoutError` / `ConnectionError`) and leaves the link closed (`open` False).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from shared import redispy

MAX_BATCH: Final = 128
CLOSED_BY_SERVER: Final = "Connection closed by server."  # redis-py's wording

_Queued = tuple[tuple[EncodableT, ...], "asyncio.Future[Any]"]


class Counters(Protocol):
    """What a link reports to its owner: round trips, commands, the largest batch."""

    max_batch: int
    batches: int
    commands: int
    largest_batch: int


class Link(asyncio.Protocol):
    """The dedicated connection's protocol: writes batches, hands replies out in order."""

    def __init__(
        self,
        counters: Counters,
        transport: asyncio.BaseTransport,
        inner: asyncio.BaseProtocol,
        conn: AbstractConnection,
    ) -> None:
        self.open = True
        self._counters = counters
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

    @classmethod
    def attach(cls, counters: Counters, conn: AbstractConnection) -> Link:
        """Take over the transport of a connection redis-py has just connected.

        Raises redis-py's `ConnectionError` when it has no open asyncio transport (closed
        under us meanwhile), so the owner's retry or fallback applies."""
        writer = redispy.stream_writer(conn)
        if writer is None or writer.transport.is_closing():
            raise RedisConnectionError(CLOSED_BY_SERVER)
        transport = writer.transport
        link = cls(counters, transport, transport.get_protocol(), conn)
        transport.set_protocol(link)
        return link

    def submit(self, args: tuple[EncodableT, ...]) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        if self._waiting:
            self._queue.append((args, future))
        else:
            self._write([(args, future)])
        return future

    def submit_many(self, commands: list[tuple[EncodableT, ...]]) -> list[asyncio.Future[Any]]:
        """`submit` for several commands: written together in one write when the link is
        idle (whatever their number), else queued behind the batch on the wire."""
        loop = self._loop
        batch = [(args, loop.create_future()) for args in commands]
        if self._waiting:
            self._queue.extend(batch)
        elif batch:
            self._write(batch)
        return [future for _, future in batch]

    def close(self, error: Exception) -> None:
        """Fail what is pending with `error` and drop the connection (it may be out of step)."""
        self._fail(error)
        self._transport.abort()

    def _write(self, batch: list[_Queued]) -> None:
        if self._transport.is_closing():
            # Closed under us (redis-py's own disconnect, say) with `connection_lost` still to
            # come: uvloop raises RuntimeError on such a write, asyncio drops it silently.
            error = RedisConnectionError(CLOSED_BY_SERVER)
            self._fail(error)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
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
        counters = self._counters
        counters.batches += 1
        counters.commands += len(batch)
        counters.largest_batch = max(counters.largest_batch, len(batch))
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
        limit = self._counters.max_batch
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
        self.close(RedisTimeoutError("Timeout reading from socket"))

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
