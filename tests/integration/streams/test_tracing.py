"""Tracing through the stream toolkit on a real Redis: a `process` span per traced entry, a
child of the producer's context and linked to it, in both services' handlers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from devtools.polling import eventually
from devtools.settings import StackSettings
from invalidator.usecases import Purger
from session_service.consumer import Revoker
from shared.keys import Keys
from shared.streams import Delivery, build_consumer
from shared.tracing import Spans, Tracing
from tests.integration.streams.support import (
    UserEventModel,
    caught_up,
    publish,
    running,
    user_event,
)

GROUP = "traced"


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def traced(kind: str, value: str | None, uid: uuid.UUID | None = None) -> UserEventModel:
    return user_event(kind, uid).model_copy(update={"traceparent": value})


def spans_for(exporter: InMemorySpanExporter) -> Spans:
    provider = TracerProvider()  # parentbased_always_on, as with no OTEL_TRACES_SAMPLER
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = Tracing(provider).spans("test")
    assert spans is not None
    return spans


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


class Failing:
    """Fails every entry of one user, handles the rest."""

    def __init__(self, poison: uuid.UUID) -> None:
        self.poison = poison

    async def __call__(self, batch: Sequence[Delivery]) -> Mapping[str, BaseException]:
        return {
            d.entry_id: RuntimeError("cannot")
            for d in batch
            if d.event.payload.user_id == self.poison
        }


async def test_only_entries_with_a_sampled_context_get_a_linked_process_span(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", stream_max_deliveries=1)
    keys = Keys(settings.key_prefix)
    exporter = InMemorySpanExporter()
    spans = spans_for(exporter)
    poison = uuid.uuid4()
    producer = (uuid.uuid4().hex, uuid.uuid4().hex[:16])
    sampled = traced("user.updated", traceparent(*producer))
    events = [
        sampled,
        traced("user.updated", traceparent(uuid.uuid4().hex, "1" * 16, sampled=False)),
        traced("user.updated", None),
        traced("user.updated", "garbage"),
        traced("user.deleted", traceparent(uuid.uuid4().hex, "2" * 16), poison),
    ]
    entry_ids = [await publish(redis, keys.user_events(), e) for e in events]
    consumer = build_consumer(redis, settings, GROUP, Failing(poison), consumer="c1", spans=spans)
    async with running(consumer):
        await eventually(lambda: caught_up(redis, keys.user_events(), GROUP), "group caught up")
    processed = named(exporter, f"process {keys.user_events()}")
    assert len(processed) == 2  # the sampled one and the poison; nothing for the others
    ok = next(s for s in processed if s.status.status_code is not StatusCode.ERROR)
    assert ok.kind is SpanKind.CONSUMER
    assert ok.context.trace_id == int(producer[0], 16)
    assert ok.parent is not None
    assert ok.parent.span_id == int(producer[1], 16)
    assert [link.context.span_id for link in ok.links] == [int(producer[1], 16)]
    assert ok.attributes is not None
    assert ok.attributes["messaging.consumer.group.name"] == GROUP
    assert ok.attributes["messaging.message.id"] == str(sampled.id)
    assert ok.attributes["app.stream.entry_id"] == entry_ids[0]
    assert ok.attributes["messaging.destination.name"] == keys.user_events()
    failed = next(s for s in processed if s is not ok)
    assert failed.status.status_code is StatusCode.ERROR  # failed, then dead-lettered


async def test_the_purge_and_the_revocation_hang_under_their_entrys_span(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms")
    keys = Keys(settings.key_prefix)
    exporter = InMemorySpanExporter()
    spans = spans_for(exporter)
    uid = uuid.uuid4()

    class Sessions:
        async def revoke_all(
            self,
            user_id: uuid.UUID,
            *,
            reason: str = "requested",
            keep: str | None = None,
            created_before_ms: int | None = None,
        ) -> int:
            return 2

    purger = build_consumer(
        redis, settings, "purge", Purger(redis, keys, None, spans), consumer="p", spans=spans
    )
    revoker = build_consumer(
        redis, settings, "revoke", Revoker(Sessions(), spans), consumer="r", spans=spans
    )
    context = traceparent(uuid.uuid4().hex, uuid.uuid4().hex[:16])
    await publish(redis, keys.user_events(), traced("user.password_changed", context, uid))
    async with running(purger), running(revoker):
        await eventually(lambda: caught_up(redis, keys.user_events(), "purge"), "purge caught up")
        await eventually(lambda: caught_up(redis, keys.user_events(), "revoke"), "revoke caught up")
    by_id = {s.context.span_id: s for s in exporter.get_finished_spans()}
    for child, group in (("purge", "purge"), ("announce", "purge"), ("revoke sessions", "revoke")):
        (span,) = named(exporter, child)
        assert span.parent is not None
        parent = by_id[span.parent.span_id]
        assert parent.name == f"process {keys.user_events()}"
        assert parent.attributes is not None
        assert parent.attributes["messaging.consumer.group.name"] == group
    (purge,) = named(exporter, "purge")
    assert purge.attributes is not None
    assert purge.attributes["app.cache.keys"] == 2
    assert isinstance(purge.attributes["app.cache.generation"], int)
    (revoke,) = named(exporter, "revoke sessions")
    assert revoke.attributes is not None
    assert revoke.attributes["app.sessions.revoked"] == 2
