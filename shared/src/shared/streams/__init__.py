"""Stream toolkit: consumer groups that lose nothing, retry, and dead-letter.

Used by the invalidator (group `invalidator`) and the session service (group `session`).
It closes FastStream's traps with Redis streams (a group created at `$` skips what was published
before it, random consumer names strand pending entries, a failed entry is never retried, no
dead letters): groups are created at id 0, consumer names are stable, failed entries are
retried via XAUTOCLAIM, and poison goes to the DLQ.

Typical use (inside a lifespan; `redis` is the *data* Redis that holds the stream)::

    from shared.streams import StreamMetrics, build_consumer, build_housekeeper

    async def handle(batch: Sequence[Delivery]) -> Mapping[str, BaseException]:
        failures = {}
        for d in batch:                    # d.event is the parsed shared.events union
            if d.event.type == "user.deleted":
                ...                        # the effect; idempotent: entries can come twice
        return failures                    # {entry_id: error} for entries that failed

    metrics = StreamMetrics.create(registry)
    consumer = build_consumer(redis, settings, SESSION_GROUP, handle, metrics=metrics)
    task = asyncio.create_task(consumer.run())        # until consumer.stop()
    housekeeping = asyncio.create_task(build_housekeeper(redis, settings, consumer, metrics).run())
    ...
    consumer.stop()                                   # on shutdown: stop, not cancel (see
    await asyncio.wait_for(task, settings.stream_block + 5)   # StreamConsumer.stop)
    housekeeping.cancel()

API:

- `ensure_group(redis, stream, group)` — XGROUP CREATE at 0 with MKSTREAM; BUSYGROUP is fine.
- `consumer_name(settings, group)` — `CONSUMER_NAME`, else `<host>-<id>` with the id persisted
  in a flock-ed slot file under STREAM_STATE_DIR, else `default_state_dir()` (XDG state).
- `StreamConsumer(redis, ConsumerConfig, handler, metrics)` — `run()` until `stop()`: group, own
  pending entries first, then `XREADGROUP COUNT max_records` batches and an XAUTOCLAIM loop.
  The handler gets `Delivery(entry_id, event, fields, deliveries)` items and returns failures
  (or raises: each entry is then retried alone). Acks only entries whose effect is done.
  Dead-letters at once entries that do not parse (`malformed`, `unknown_type`, `invalid` —
  wrong version included), once for all groups (`dlq:group` = `*`), and after
  `STREAM_MAX_DELIVERIES` failed deliveries (`handler_failed`, naming the group); a failure
  because Redis was unreachable never counts toward that. Acks unhandled an entry replayed
  for another group. Settings: STREAM_MAX_RECORDS, STREAM_BLOCK, STREAM_CLAIM_IDLE,
  STREAM_MAX_DELIVERIES, DLQ_MAXLEN, DLQ_MAX_ENTRY_BYTES.
- Tracing: given `spans` (`shared.tracing.Tracing.spans`), the consumer makes a `process`
  span per entry that carries a sampled `traceparent` — a child of the producer's context and
  linked to it — and hands it to the handler as `Delivery.span` for its own spans.
- `parse_fields(fields)` — an entry's event, or `EventError` with the reason.
- `Housekeeper` / `build_housekeeper` — gauges every HOUSEKEEPING_INTERVAL; one instance at
  a time (`shared.lock`) deletes consumers idle past CONSUMER_IDLE_LIMIT with nothing pending.
- `stream_status(redis, stream)` — length, groups, consumers, pending, lag, oldest age.
- `deadletter.list_letters / replay / drop` — the operator's DLQ commands (what a letter
  holds, who writes it, and the order of writes: `shared.streams.deadletter`).
- `StreamMetrics.create(registry)` — the counters and gauges, labelled by group.
"""

from __future__ import annotations

from shared.connections import RedisClient
from shared.keys import Keys
from shared.settings import StreamSettings
from shared.streams.consumer import StreamConsumer
from shared.streams.deadletter import DeadLetter, ReplayResult, drop, list_letters, replay
from shared.streams.delivery import BatchHandler, ConsumerConfig, Delivery, parse_fields
from shared.streams.groups import consumer_name, default_state_dir, ensure_group
from shared.streams.housekeeping import Housekeeper, StreamStatus, stream_status
from shared.streams.metrics import StreamMetrics
from shared.tracing import Spans

__all__ = [
    "BatchHandler",
    "ConsumerConfig",
    "DeadLetter",
    "Delivery",
    "Housekeeper",
    "ReplayResult",
    "StreamConsumer",
    "StreamMetrics",
    "StreamStatus",
    "build_consumer",
    "build_housekeeper",
    "consumer_name",
    "default_state_dir",
    "drop",
    "ensure_group",
    "list_letters",
    "parse_fields",
    "replay",
    "stream_status",
]


def build_consumer(
    redis: RedisClient,
    settings: StreamSettings,
    group: str,
    handler: BatchHandler,
    *,
    metrics: StreamMetrics | None = None,
    consumer: str | None = None,
    spans: Spans | None = None,
) -> StreamConsumer:
    """A consumer of `Keys.user_events()` in `group`, configured from settings."""
    keys = Keys(settings.key_prefix)
    config = ConsumerConfig.from_settings(
        settings,
        stream=keys.user_events(),
        group=group,
        consumer=consumer or consumer_name(settings, group),
        dead_letters=keys.dead_letters(),
    )
    return StreamConsumer(redis, config, handler, metrics, spans)


def build_housekeeper(
    redis: RedisClient,
    settings: StreamSettings,
    consumer: StreamConsumer,
    metrics: StreamMetrics | None = None,
) -> Housekeeper:
    cfg = consumer.config
    return Housekeeper(
        redis=redis,
        keys=Keys(settings.key_prefix),
        stream=cfg.stream,
        group=cfg.group,
        consumer=cfg.consumer,
        interval=settings.housekeeping_interval,
        idle_limit=settings.consumer_idle_limit,
        metrics=metrics,
    )
