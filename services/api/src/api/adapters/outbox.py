"""The transactional outbox: events committed with their write, relayed to the stream.

Each write inserts its envelope in the same transaction (no event without its commit, no
commit without its event). `OutboxRelay` publishes pending rows with pipelined
`XADD ... MAXLEN ~ N * data <json>`, then marks them published in the transaction that
selected them. It wakes right after each commit (`notify`), polls slowly as a safety net,
and retries with backoff while Redis is down. Woken by a commit, it first lingers a few ms
(`OUTBOX_LINGER`), so the commits that follow go out in the same round: one transaction, one
XADD script and one wake-up of each consumer group for a burst of writes instead of one
each, and a write's event chain (relay, invalidator, session group) is not on the cores in
the very moment its client reads what it wrote (decision 0037). On PostgreSQL the rows are
selected `FOR UPDATE SKIP LOCKED`, so several api instances never publish the same row at
once (SQLite has one writer and no row locks: one api instance per SQLite file).

Traced (`shared.tracing`), each row written by a traced request gets a `publish` span
(PRODUCER) continuing that request's trace from the row's `traceparent` column.

Each round also sets the backlog gauges (`outbox_backlog`, `outbox_oldest_unsent_age_seconds`)
from one query on the pending-rows index; while Redis is down they show events piling up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from opentelemetry.trace import Span, SpanKind
from redis.exceptions import RedisError
from redis.typing import EncodableT
from sqlalchemy import Row, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.adapters.orm import OutboxRow, utcnow
from api.metrics import ApiMetrics
from shared.connections import UNAVAILABLE_ERRORS, RedisClient
from shared.events import DATA_FIELD, UserEvent
from shared.replication import Acked, Replication, ReplicaWait
from shared.tasks import Backoff, raise_if_cancelling
from shared.tracing import Spans, finish, messaging

logger = logging.getLogger(__name__)

# Redis down, or the database briefly unreachable: back off and try again, never die.
_RETRYABLE: Final[tuple[type[BaseException], ...]] = (
    *UNAVAILABLE_ERRORS,
    RedisError,
    SQLAlchemyError,
)
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_CAP: Final = 2.0
# The backlog query counts the pending index, so it costs as much as the backlog is long: while
# the relay drains a backlog batch after batch (or retries while Redis is down) it runs at most
# this often, not per batch. Every round that ends in the idle wait runs it.
_MEASURE_EVERY: Final = 1.0


# A pending row as the relay selects it: id, envelope, traceparent.
_Pending = Row[uuid.UUID, str, str | None]


def add_event(session: AsyncSession, event: UserEvent, traceparent: str | None = None) -> None:
    """Stage `event` in the caller's transaction; its envelope id is the row id. A traced
    write's context goes in the row's column and in the envelope."""
    if traceparent is not None:
        event = event.model_copy(update={"traceparent": traceparent})
    session.add(
        OutboxRow(
            id=event.id,
            type=event.type,
            envelope=event.to_json().decode(),
            created_at=event.occurred_at,
            traceparent=traceparent,
        )
    )


# KEYS[1] the stream; ARGV[1] MAXLEN (approximate), ARGV[2] the field, ARGV[3..] envelopes:
# one XADD each. Server-made ids (`*`) in a script need effects replication, the default
# since Redis 5.
_PUBLISH: Final = """
local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[i])
end
return ids
"""
# A batch whose copy on a replica is not confirmed stays unsent (published again later).
_UNSURE: Final = frozenset({Replication.TIMED_OUT, Replication.UNCHECKED})


class OutboxRelay:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        redis: RedisClient,
        stream: str,
        *,
        maxlen: int,
        batch_size: int,
        poll_interval: float,
        metrics: ApiMetrics,
        linger: float = 0.0,
        replica_wait_ms: int = 0,
        spans: Spans | None = None,
    ) -> None:
        self.db = db
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.linger = linger
        self.metrics = metrics
        self.spans = spans  # None: tracing off
        self._span_name = f"publish {stream}"
        self._wake = asyncio.Event()
        self._measured_at = float("-inf")
        self._publish = redis.register_script(_PUBLISH)
        self.replicas = ReplicaWait(redis, replica_wait_ms)

    def notify(self) -> None:
        """Called after each commit that staged an event: publish now, not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        if self.spans is None:
            await self._relay()
            return
        # The relay's own statements (a poll every OUTBOX_POLL_INTERVAL, the backlog query)
        # belong to no request: traced, each would start a trace of its own. Its `publish`
        # spans continue the rows' traces instead. (Imported here: tracing on only.)
        from opentelemetry.instrumentation.utils import suppress_instrumentation  # noqa: PLC0415

        with suppress_instrumentation():
            await self._relay()

    async def _relay(self) -> None:
        backoff = Backoff(_BACKOFF_FIRST, _BACKOFF_CAP)
        while True:
            raise_if_cancelling()
            self._wake.clear()
            try:
                published = await self.publish_pending()
            except _RETRYABLE as exc:
                raise_if_cancelling()
                self.metrics.outbox_errors.inc()
                logger.warning("outbox relay: publish failed (%s); retrying", type(exc).__name__)
                await self._measure()
                await backoff.wait()
                continue
            raise_if_cancelling()
            backoff.reset()
            idle = published < self.batch_size
            await self._measure(force=idle)
            if idle:
                await self._sleep()

    async def _sleep(self) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the relay would outlive the app's shutdown.
        try:
            async with asyncio.timeout(self.poll_interval):
                await self._wake.wait()
        except TimeoutError:
            return
        if self.linger:
            # Woken by a commit: the ones that follow within the linger join its round.
            await asyncio.sleep(self.linger)

    async def _measure(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._measured_at < _MEASURE_EVERY:
            return
        self._measured_at = now
        try:
            await self.measure_backlog()
        except _RETRYABLE as exc:
            # The database is away: the round's own error is already logged; keep the last values.
            logger.debug("outbox relay: backlog not measured (%s)", type(exc).__name__)
        raise_if_cancelling()

    async def measure_backlog(self) -> None:
        """Set the backlog gauges from one query on the pending-rows index."""
        statement = select(func.count(), func.min(OutboxRow.created_at)).where(
            OutboxRow.published_at.is_(None)
        )
        async with self.db() as session:
            row = (await session.execute(statement)).one()
        backlog: int = row[0]
        oldest: datetime | None = row[1]  # None when nothing is pending
        self.metrics.outbox_backlog.set(backlog)
        age = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
        self.metrics.outbox_oldest_age.set(age)

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; the count published."""
        async with self.db() as session, session.begin():
            statement = (
                select(OutboxRow.id, OutboxRow.envelope, OutboxRow.traceparent)
                .where(OutboxRow.published_at.is_(None))
                .order_by(OutboxRow.created_at, OutboxRow.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.execute(statement)).all()
            if not rows:
                return 0
            # One script (one key: one cluster slot) adds the batch; `WAIT` on its connection
            # then tells whether a replica holds it. Only then are the rows marked sent: an
            # XADD a failover could take back is published again instead (a duplicate entry,
            # which consumers handle as once).
            acked = await self._send(rows)
            self.metrics.outbox_replica_acks.labels(acked.replication.value).inc()
            if acked.replication in _UNSURE:
                logger.warning(
                    "outbox relay: %d rows published, no replica confirmed them (%s): "
                    "they will be published again",
                    len(rows),
                    acked.replication.value,
                )
                return 0
            ids = [row_id for row_id, _, _ in rows]
            await session.execute(
                update(OutboxRow).where(OutboxRow.id.in_(ids)).values(published_at=utcnow())
            )
        self.metrics.outbox_published.inc(len(rows))
        return len(rows)

    async def _send(self, rows: Sequence[_Pending]) -> Acked:
        """The batch's XADDs (one script) and the replica's word on them; traced, one
        `publish` span per traced row around the batch's round trip, each with the entry id
        its XADD got."""
        args: list[EncodableT] = [self.maxlen, DATA_FIELD, *(e for _, e, _ in rows)]
        if self.spans is None:
            return await self.replicas.run(self._publish, [self.stream], args)
        spans = self._publish_spans(rows)
        try:
            acked = await self.replicas.run(self._publish, [self.stream], args)
        except BaseException as exc:
            for span in spans.values():
                finish(span, exc)
            raise
        for index, span in spans.items():
            span.set_attribute("app.stream.entry_id", _text(acked.reply[index]))
            span.set_attribute("app.replication", acked.replication.value)
            finish(span)
        return acked

    def _publish_spans(self, rows: Sequence[_Pending]) -> dict[int, Span]:
        assert self.spans is not None
        started: dict[int, Span] = {}
        for index, (row_id, _, traceparent) in enumerate(rows):
            parent = self.spans.parent(traceparent)
            if parent is None:
                continue
            attributes = messaging(
                "send",
                self.stream,
                {"messaging.message.id": str(row_id), "messaging.batch.message_count": len(rows)},
            )
            started[index] = self.spans.follow(
                parent, self._span_name, kind=SpanKind.PRODUCER, attributes=attributes
            )
        return started


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
