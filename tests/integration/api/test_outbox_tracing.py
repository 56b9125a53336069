"""A traced write on real PostgreSQL and Redis: its context goes into the outbox row and the
envelope, and the relay's publish continues it; an unsampled write carries none."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind
from sqlalchemy import select

from api.adapters.orm import OutboxRow
from api.metrics import ApiMetrics
from api.schemas import UserCreate
from api.state import ApiState, open_state
from devtools.polling import eventually
from devtools.settings import StackSettings
from shared.tracing import Tracing, format_traceparent


def tracing(exporter: InMemorySpanExporter, sampler: Sampler) -> Tracing:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


async def rows(state: ApiState) -> list[OutboxRow]:
    async with state.db() as session:
        return list((await session.execute(select(OutboxRow))).scalars())


async def all_published(state: ApiState) -> bool:
    found = await rows(state)
    return bool(found) and all(row.published_at is not None for row in found)


def new_user() -> UserCreate:
    return UserCreate(email=f"{uuid.uuid4().hex}@example.com", name="Ada", password="s3cret-pw")


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


async def test_a_sampled_write_stages_its_context_and_the_relay_continues_it(
    clean_database: str, make_settings: Callable[..., StackSettings]
) -> None:
    exporter = InMemorySpanExporter()
    settings = make_settings(database_url=clean_database, rate_limit_enabled=False)
    traced = tracing(exporter, ParentBased(ALWAYS_ON))
    async with open_state(settings, ApiMetrics(), traced) as state:
        spans = traced.spans("test")
        assert spans is not None
        with spans.current("request", kind=SpanKind.SERVER):
            await state.users.create(new_user())
        await eventually(lambda: all_published(state), "outbox published")
        (row,) = await rows(state)
    finished = list(exporter.get_finished_spans())
    request, write = one(finished, "request"), one(finished, "user write")
    assert write.parent is not None
    assert write.parent.span_id == request.context.span_id
    assert row.traceparent == format_traceparent(write.context)
    assert orjson.loads(row.envelope)["traceparent"] == row.traceparent
    # The transaction's statements are spans under it (the SQLAlchemy instrumentation).
    statements = [
        s
        for s in finished
        if s.kind is SpanKind.CLIENT and s.parent and s.parent.span_id == write.context.span_id
    ]
    assert "INSERT" in {s.name.split()[0] for s in statements}
    publish = one(finished, f"publish {state.keys.user_events()}")
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == write.context.span_id
    assert publish.context.trace_id == request.context.trace_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == str(row.id)
    # The writer's own purge and its announcement, in the request.
    for name in ("purge", "announce"):
        purge = one(finished, name)
        assert purge.parent is not None
        assert purge.parent.span_id == request.context.span_id


async def test_an_unsampled_write_carries_no_context(
    clean_database: str, make_settings: Callable[..., StackSettings]
) -> None:
    exporter = InMemorySpanExporter()
    settings = make_settings(database_url=clean_database, rate_limit_enabled=False)
    async with open_state(
        settings, ApiMetrics(), tracing(exporter, ParentBased(ALWAYS_OFF))
    ) as state:
        await state.users.create(new_user())
        await eventually(lambda: all_published(state), "outbox published")
        (row,) = await rows(state)
    assert row.traceparent is None
    assert "traceparent" not in orjson.loads(row.envelope)
    assert not exporter.get_finished_spans()
