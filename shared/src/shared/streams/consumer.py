"""The consumer runner: read a batch, parse, handle, ack after the effect, reclaim, dead-letter.

Life of an entry in one group:

1. `XREADGROUP … COUNT max_records BLOCK block >` hands a batch to this consumer (at start,
   the consumer first re-reads its *own* pending entries from id 0: a restarted instance with
   the same name finishes what it had in hand without waiting for the idle time).
2. An entry replayed for another group (`dlq:for` names it) is acked without handling.
   Each other entry's `data` is parsed into the shared event union. An entry that does not
   parse, has an unknown type or a wrong version is dead-lettered at once with the reason,
   once for all groups (`dlq:group` = `*`; see `deadletter` for the guard that decides
   which group writes it).
3. The batch handler gets the parsed deliveries and does the effect (e.g. one pipeline). It
   returns the ids that failed (or raises: then each entry is retried alone once, so one
   poison entry does not take its batch-mates down with it).
4. Done entries are acked. Failed ones stay pending; after `claim_idle` any live consumer
   of the group claims them with `XAUTOCLAIM` and retries. A failure at delivery
   `max_deliveries` dead-letters the entry (with the error, this group and the count).

Traced (`shared.tracing`), each entry that carries a sampled `traceparent` gets a `process`
span (CONSUMER) from its parsing to its ack: a child of the producer's context and linked to
it, in `Delivery.span` for the handler to hang its own spans under. Both groups get theirs
here, generically; entries without a context cost one `None` check.

Letters are written (`XADD` to the DLQ) before the batch's `XACK`, in two steps: the stream
and the DLQ are in different Cluster slots, so no MULTI may span them, and this order can
only duplicate a letter (a crash between the two), never lose one. Redis errors in the loop
(server down, timeouts) are logged and retried with backoff; the entries stay pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue
from redis.exceptions import RedisError, ResponseError

from shared.connections import UNAVAILABLE_ERRORS, RedisClient
from shared.errors import EventError
from shared.events import SessionEvent, UserEvent
from shared.keys import Keys
from shared.streams.deadletter import EVERY_GROUP, REPLAY_FOR, claim_letter, letter_fields
from shared.streams.delivery import BatchHandler, ConsumerConfig, Delivery, parse_fields
from shared.streams.groups import ensure_group
from shared.streams.metrics import StreamMetrics
from shared.tasks import Backoff, raise_if_cancelling
from shared.tracing import Spans, finish, messaging

logger = logging.getLogger(__name__)

Entry = tuple[Any, Any]  # (id, fields) as redis-py returns them; fields None when trimmed


class _Letter(NamedTuple):
    entry_id: str
    fields: Mapping[Any, Any]
    error: str
    reason: str
    deliveries: int
    group: str  # this consumer's group, or EVERY_GROUP for an entry no group can parse


class _Sorted(NamedTuple):
    batch: list[Delivery]
    letters: list[_Letter]
    skipped: list[str]  # replayed for another group: acked unhandled
    gone: list[str]  # trimmed away while pending: nothing to do


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamConsumer:
    """One consumer of one group. `run()` until `stop()`; the pieces are public for tests."""

    def __init__(
        self,
        redis: RedisClient,
        config: ConsumerConfig,
        handler: BatchHandler,
        metrics: StreamMetrics | None = None,
        spans: Spans | None = None,
    ) -> None:
        self.redis = redis
        self.config = config
        self.handler = handler
        self.metrics = metrics
        self.spans = spans  # None: tracing off
        self._span_name = f"process {config.stream}"
        self._keys = Keys(config.key_prefix)
        self._group_bytes = config.group.encode()
        self._inflight: set[str] = set()
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Ensure the group, finish our own pending entries, then read and reclaim until stop()."""
        await self._retrying(self.prepare)
        self.ready.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._forever(self.read_new, pause=0.0))
            tasks.create_task(self._forever(self.reclaim, pause=self._reclaim_every()))

    def stop(self) -> None:
        """Finish the batch in hand, then return from run() (within about STREAM_BLOCK).

        Prefer this to cancelling: a cancellation that lands inside a redis-py read can race
        with the read's own timeout (Python 3.11 asyncio) and be lost, leaving the task stuck.
        """
        self._stopping.set()

    async def prepare(self) -> None:
        await ensure_group(self.redis, self.config.stream, self.config.group)
        await self.recover_own()

    async def recover_own(self) -> int:
        """Re-read this consumer's own pending entries (from a previous incarnation)."""
        start, seen = "0", 0
        while True:
            entries = await self._read(start, block=None)
            if not entries:
                return seen
            seen += len(entries)
            await self.process(entries, fresh=False)
            start = _text(entries[-1][0])

    async def read_new(self) -> int:
        entries = await self._read(">", block=self.config.block_ms)
        if entries:
            await self.process(entries, fresh=True)
        return len(entries)

    async def reclaim(self) -> int:
        """XAUTOCLAIM every entry idle past claim_idle (any consumer's) and retry it."""
        cfg, cursor, claimed = self.config, "0-0", 0
        for _ in range(1000):  # bounded: a huge PEL is finished on the next round
            reply: Any = await self.redis.xautoclaim(
                cfg.stream, cfg.group, cfg.consumer, cfg.claim_idle_ms, cursor, cfg.max_records
            )
            cursor, entries = _text(reply[0]), reply[1]
            entries = [e for e in entries if e[0] is None or _text(e[0]) not in self._inflight]
            if entries:
                claimed += len(entries)
                if self.metrics:
                    self.metrics.reclaimed.labels(cfg.group).inc(len(entries))
                await self.process(entries, fresh=False)
            if cursor == "0-0":
                break
        return claimed

    async def process(self, entries: Sequence[Entry], *, fresh: bool) -> None:
        """Parse, handle, then ack or dead-letter one batch (see the module docstring)."""
        live = [(_text(i), f) for i, f in entries if i is not None]
        ids = [i for i, _ in live]
        self._inflight.update(ids)
        try:
            await self._process(live, ids, fresh=fresh)
        finally:
            self._inflight.difference_update(ids)

    async def _process(self, live: list[tuple[str, Any]], ids: list[str], *, fresh: bool) -> None:
        counts = {} if fresh else await self._delivery_counts(ids)
        entries = self._sort(live, counts)
        if self.spans is None:
            await self._complete(entries)
            return
        try:
            failures = await self._complete(entries)
        except BaseException as exc:
            _finish_spans(entries.batch, {}, exc)
            raise
        _finish_spans(entries.batch, failures, None)

    async def _complete(self, entries: _Sorted) -> Mapping[str, BaseException]:
        """Handle, then ack or dead-letter; the entries that failed."""
        failures = await self._handle(entries.batch)
        for d in entries.batch:
            if (failure := failures.get(d.entry_id)) is not None:
                self._log_failure(d, failure)
                if d.deliveries >= self.config.max_deliveries and not _transient(failure):
                    error = _describe(failure)
                    entries.letters.append(
                        _Letter(
                            d.entry_id, d.fields, error, "handler_failed", d.deliveries,
                            self.config.group,
                        )
                    )  # fmt: skip
        done = [d for d in entries.batch if d.entry_id not in failures]
        await self._settle(done, entries)
        return failures

    def _sort(self, live: list[tuple[str, Any]], counts: Mapping[str, int]) -> _Sorted:
        out = _Sorted([], [], [], [])
        for entry_id, fields in live:
            if not fields:
                out.gone.append(entry_id)
                continue
            target = fields.get(REPLAY_FOR)
            if target is not None and target != self._group_bytes:
                out.skipped.append(entry_id)
                continue
            n = counts.get(entry_id, 1)
            try:
                event = parse_fields(fields)
            except EventError as exc:
                # Unparseable for every group, unless it was replayed for this one alone.
                group = EVERY_GROUP if target is None else self.config.group
                out.letters.append(_Letter(entry_id, fields, exc.reason, exc.code, n, group))
                continue
            span = None if self.spans is None else self._process_span(entry_id, event, n)
            out.batch.append(Delivery(entry_id, event, fields, n, span))
        return out

    def _process_span(self, entry_id: str, event: UserEvent | SessionEvent, n: int) -> Span | None:
        """The entry's `process` span: a child of the producer's context (one trace from the
        write to every group's effect) and linked to it, as the messaging conventions have a
        consumer do. None for an entry that carries no (sampled) context: the common case
        costs a flag check, nothing else."""
        assert self.spans is not None
        parent = self.spans.parent(event.traceparent)
        if parent is None:
            return None
        cfg = self.config
        # Few attributes: each costs the span's creation and its export (about half of a
        # sampled entry's cost at 15). The event's type is on the producer's span.
        extra: dict[str, AttributeValue] = {
            "messaging.consumer.group.name": cfg.group,
            "messaging.message.id": str(event.id),
            "app.stream.entry_id": entry_id,
        }
        if n > 1:  # a redelivery: how many times it has been read
            extra["app.stream.deliveries"] = n
        attributes = messaging("process", cfg.stream, extra)
        return self.spans.follow(
            parent, self._span_name, kind=SpanKind.CONSUMER, attributes=attributes, link=True
        )

    async def _handle(self, batch: list[Delivery]) -> dict[str, BaseException]:
        if not batch:
            return {}
        try:
            return dict(await self.handler(batch))
        except Exception as exc:  # noqa: BLE001 - recorded per entry: retried, then dead-lettered
            raise_if_cancelling()
            if len(batch) == 1 or _transient(exc):
                # Server unreachable: retrying entry by entry would only wait out N timeouts.
                return {d.entry_id: exc for d in batch}
        failures: dict[str, BaseException] = {}
        for delivery in batch:  # isolate the poison: retry each entry on its own once
            failures.update(await self._handle([delivery]))
        return failures

    async def _settle(self, done: list[Delivery], entries: _Sorted) -> None:
        written = await self._write_letters(entries.letters)
        ack = [d.entry_id for d in done] + [letter.entry_id for letter in entries.letters]
        ack += entries.gone + entries.skipped
        if ack:
            await self.redis.xack(self.config.stream, self.config.group, *ack)
        self._count(done, written, entries.skipped)

    async def _write_letters(self, letters: list[_Letter]) -> list[_Letter]:
        """XADD the letters this group owns (all but `*` ones another group claimed)."""
        cfg = self.config
        mine: list[_Letter] = []
        for letter in letters:
            if letter.group == EVERY_GROUP:
                guard = self._keys.dead_letter_guard(letter.entry_id, cfg.stream)
                owner = await claim_letter(self.redis, guard, cfg.group)
                if owner != cfg.group:
                    logger.debug("%s does not parse; group %s letters it", letter.entry_id, owner)
                    continue
            mine.append(letter)
        if not mine:
            return mine
        pipe = self.redis.pipeline(transaction=False)  # one key (the DLQ): one Cluster slot
        for entry_id, fields, error, reason, n, group in mine:
            dead: dict[Any, Any] = letter_fields(
                fields, error=error, reason=reason, group=group, deliveries=n,
                stream=cfg.stream, entry_id=entry_id, consumer=cfg.consumer,
                max_entry_bytes=cfg.dlq_max_entry_bytes,
            )  # fmt: skip
            # Queued on the pipeline (redis-py types every command as an awaitable).
            pipe.xadd(cfg.dead_letters, dead, maxlen=cfg.dlq_maxlen, approximate=True)  # type: ignore[unused-awaitable]
        await pipe.execute()
        return mine

    def _count(self, done: list[Delivery], letters: list[_Letter], skipped: list[str]) -> None:
        for entry_id, _, error, reason, n, group in letters:
            logger.error(
                "dead-lettered %s for group %s after %d deliveries (%s): %s",
                entry_id, group, n, reason, error,
            )  # fmt: skip
        if self.metrics is None:
            return
        self.metrics.count_handled(self.config.group, Tally(d.event.type for d in done))
        for reason, count in Tally(letter.reason for letter in letters).items():
            self.metrics.dead_lettered.labels(self.config.group, reason).inc(count)
        if skipped:
            self.metrics.replays_skipped.labels(self.config.group).inc(len(skipped))

    def _log_failure(self, delivery: Delivery, exc: BaseException) -> None:
        if self.metrics:
            self.metrics.failures.labels(self.config.group).inc()
        logger.warning(
            "entry %s (%s) failed on delivery %d of %d: %s",
            delivery.entry_id, delivery.event.type, delivery.deliveries,
            self.config.max_deliveries, _describe(exc),
        )  # fmt: skip

    async def _read(self, start: str, *, block: int | None) -> list[Entry]:
        cfg = self.config
        reply: Any = await self.redis.xreadgroup(
            cfg.group, cfg.consumer, {cfg.stream: start}, count=cfg.max_records, block=block
        )
        return list(reply[0][1]) if reply else []

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        cfg = self.config
        rows: Any = await self.redis.xpending_range(
            cfg.stream, cfg.group, min=ids[0], max=ids[-1], count=len(ids) + cfg.max_records,
            consumername=cfg.consumer,
        )  # fmt: skip
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    def _reclaim_every(self) -> float:
        # Half the idle time keeps a dead consumer's entries waiting at most 1.5x claim_idle.
        return min(5.0, max(0.05, self.config.claim_idle_ms / 2000))

    async def _forever(self, step: Any, *, pause: float) -> None:
        while not self._stopping.is_set():
            await self._retrying(step)
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)

    async def _retrying(self, step: Any) -> Any:
        backoff = Backoff(0.05, 2.0)
        while not self._stopping.is_set():
            try:
                return await step()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                logger.warning("group %s vanished; recreating it", self.config.group)
                with contextlib.suppress(RedisError, OSError):
                    await ensure_group(self.redis, self.config.stream, self.config.group)
            except (RedisError, OSError) as exc:
                raise_if_cancelling()
                delay = backoff.next_delay()
                logger.warning("stream consumer: Redis error (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
        return None


def _finish_spans(
    batch: list[Delivery], failures: Mapping[str, BaseException], error: BaseException | None
) -> None:
    """End the batch's `process` spans: failed ones with their error (handled, acked or
    dead-lettered, each span covers its entry until its fate was written)."""
    for delivery in batch:
        if delivery.span is not None:
            finish(delivery.span, failures.get(delivery.entry_id, error))


def _transient(exc: BaseException) -> bool:
    # The server was unreachable: not the entry's fault, so it never counts toward the DLQ;
    # it stays pending and is retried until the server answers again.
    return isinstance(exc, UNAVAILABLE_ERRORS)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
