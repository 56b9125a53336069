"""shared.tracing: when it is on, the traceparent rules, the span helpers, the request spans."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, StatusCode

from shared.errors import SettingsError
from shared.tracing import (
    ServerSpans,
    Tracing,
    current_ids,
    current_traceparent,
    exporting,
    format_traceparent,
    parse_traceparent,
)
from shared.tracing.roots import PresetIds, RootDecisions, UnsampledRoot

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE}-{SPAN}-01"
UNSAMPLED = f"00-{TRACE}-{SPAN}-00"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def tracing_with(exporter: InMemorySpanExporter, sampler: Sampler | None = None) -> Tracing:
    provider = TracerProvider(sampler=sampler or ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "api", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_on_only_with_an_otlp_endpoint(environ: dict[str, str], on: bool) -> None:
    assert exporting(environ) is on
    tracing = Tracing.from_environment("api", environ)
    assert tracing.enabled is on
    assert (tracing.spans("x") is not None) is on


def test_off_builds_nothing() -> None:
    tracing = Tracing.from_environment("api", {})
    assert tracing.provider is None
    app = FastAPI()
    tracing.instrument(app)
    assert app.user_middleware == []


async def test_on_names_the_service_unless_the_environment_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    tracing = Tracing.from_environment("invalidator", environ)
    assert tracing.provider is not None
    assert tracing.provider.resource.attributes["service.name"] == "invalidator"
    await tracing.aclose()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "purger-eu")
    renamed = Tracing.from_environment("invalidator", environ)
    assert renamed.provider is not None
    assert renamed.provider.resource.attributes["service.name"] == "purger-eu"
    await renamed.aclose()


def test_a_grpc_exporter_is_refused_naming_the_variable() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        Tracing.from_environment("api", environ)


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has nothing after the flags
        f"00-{TRACE.upper()}-{SPAN}-01",  # lower-case hex only
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-01\n",
        "",
        "garbage",
    ],
)
def test_invalid_traceparents_are_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


def test_traceparent_round_trip_and_later_versions() -> None:
    context = parse_traceparent(SAMPLED)
    assert context is not None
    assert context.is_remote
    assert context.trace_flags.sampled
    assert f"{context.trace_id:032x}" == TRACE
    assert format_traceparent(context) == SAMPLED
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01-future") is not None


def test_parent_based_samplers_skip_unsampled_contexts(exporter: InMemorySpanExporter) -> None:
    spans = tracing_with(exporter).spans("t")
    assert spans is not None
    assert spans.sampled_only
    assert spans.parent(SAMPLED) is not None
    assert spans.parent(UNSAMPLED) is None
    assert spans.parent(None) is None
    assert spans.parent("not a traceparent-at-all-but-long-enough-to-reach-offset-54") is None
    # A sampler that does not follow its parent may still record under an unsampled one.
    free = tracing_with(exporter, ALWAYS_ON).spans("t")
    assert free is not None
    assert free.parent(UNSAMPLED) is not None


def test_follow_makes_a_linked_child_of_the_remote_context(exporter: InMemorySpanExporter) -> None:
    spans = tracing_with(exporter).spans("t")
    assert spans is not None
    parent = spans.parent(SAMPLED)
    assert parent is not None
    span = spans.follow(parent, "process s", kind=SpanKind.CONSUMER, link=True)
    child = spans.child(span, "purge")
    assert child is not None
    child.end()
    span.end()
    purge, process = exporter.get_finished_spans()
    assert process.parent is not None
    assert process.parent.span_id == int(SPAN, 16)
    assert process.context.trace_id == int(TRACE, 16)
    assert [link.context.span_id for link in process.links] == [int(SPAN, 16)]
    assert purge.parent is not None
    assert purge.parent.span_id == process.context.span_id


def test_current_ids_and_traceparent_follow_the_current_span(
    exporter: InMemorySpanExporter,
) -> None:
    assert current_ids() is None
    assert current_traceparent() is None
    sampled = tracing_with(exporter).spans("t")
    unsampled = tracing_with(exporter, ParentBased(ALWAYS_OFF)).spans("t")
    assert sampled is not None
    assert unsampled is not None
    with sampled.current("work") as span:
        context = span.get_span_context()
        assert current_ids() == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
        assert current_traceparent(sampled_only=True) == format_traceparent(span.get_span_context())
    with unsampled.current("quiet"):
        assert current_traceparent() is not None  # propagated (flags 00)...
        assert current_traceparent(sampled_only=True) is None  # ...but never stored


def app_with(tracing: Tracing) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, object]:
        return {"id": item_id, "traceparent": current_traceparent()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    tracing.instrument(app)
    return app


async def test_a_request_span_per_request_named_by_its_route(
    exporter: InMemorySpanExporter,
) -> None:
    app = app_with(tracing_with(exporter))
    assert [m.cls for m in app.user_middleware] == [ServerSpans]  # type: ignore[comparison-overlap]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answered = await client.get("/items/7", headers={"traceparent": SAMPLED})
        failed = await client.get("/boom")
    assert answered.status_code == 200
    assert failed.status_code == 500
    ok, boom = exporter.get_finished_spans()
    assert ok.name == "GET /items/{item_id}"
    assert ok.kind is SpanKind.SERVER
    assert ok.context.trace_id == int(TRACE, 16)  # the caller's trace, continued
    assert ok.parent is not None
    assert ok.parent.span_id == int(SPAN, 16)
    assert ok.attributes is not None
    assert ok.attributes["http.route"] == "/items/{item_id}"
    assert ok.attributes["http.response.status_code"] == 200
    assert "url.path" not in ok.attributes  # paths can hold secrets (session ids)
    # The handler ran inside the request's span: its context is what an event would carry.
    assert answered.json()["traceparent"] == format_traceparent(ok.context)
    assert boom.name == "GET /boom"
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.context.trace_id != ok.context.trace_id  # no traceparent: a trace of its own


class CountingParentBased(ParentBased):
    """ParentBased, counting the decisions the SDK asks it for."""

    calls = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        self.calls += 1
        return super().should_sample(*args, **kwargs)


def ratio_tracing(exporter: InMemorySpanExporter, sampler: Sampler) -> Tracing:
    provider = TracerProvider(sampler=sampler, id_generator=PresetIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


async def test_the_production_sampler_takes_the_fast_root_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.01")
    tracing = Tracing.from_environment("api", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert tracing.provider is not None
    roots = RootDecisions.of(tracing.provider)
    assert roots is not None  # the SDK's ParentBased still keeps its root where we look
    assert roots.bound == TraceIdRatioBased(0.01).bound
    app = FastAPI()
    tracing.instrument(app)
    assert app.user_middleware[0].kwargs["roots"] is not None
    await tracing.aclose()
    # Any other sampler: every request through the SDK.
    assert RootDecisions.of(TracerProvider(sampler=ParentBased(ALWAYS_ON))) is None
    assert RootDecisions.of(TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)))) is None


async def test_fast_root_decisions_are_the_sdk_decisions(exporter: InMemorySpanExporter) -> None:
    sdk_rule = TraceIdRatioBased(0.5)
    sampler = CountingParentBased(TraceIdRatioBased(0.5))
    transport = httpx.ASGITransport(app=app_with(ratio_tracing(exporter, sampler)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        seen = [(await client.get(f"/items/{n}")).json()["traceparent"] for n in range(200)]
    recorded = {span.context.trace_id: span for span in exporter.get_finished_spans()}
    contexts = [parse_traceparent(value) for value in seen]
    for context in contexts:
        assert context is not None  # every request has ids, recorded or not
        decision = sdk_rule.should_sample(None, context.trace_id, "GET").decision
        sampled = decision is Decision.RECORD_AND_SAMPLE
        assert context.trace_flags.sampled is sampled
        assert (context.trace_id in recorded) is sampled
    assert 0 < len(recorded) < len(contexts)  # both outcomes happened (2^-200 otherwise)
    assert sampler.calls == len(recorded)  # a dropped request never reached the SDK
    for span in recorded.values():
        assert (span.parent, span.kind, span.name) == (
            None,
            SpanKind.SERVER,
            "GET /items/{item_id}",
        )


def test_an_unsampled_root_draws_its_ids_once_and_its_children_follow_it(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = ratio_tracing(exporter, ParentBased(TraceIdRatioBased(0.0)))
    assert tracing.provider is not None
    roots = RootDecisions.of(tracing.provider)
    assert roots is not None
    tracer = tracing.provider.get_tracer("t")
    root = roots.start(tracer, "GET")
    assert isinstance(root, UnsampledRoot)
    context = root.get_span_context()
    assert context.is_valid
    assert not context.trace_flags.sampled
    assert root.get_span_context() is context  # drawn once
    assert roots.start(tracer, "GET").get_span_context().trace_id != context.trace_id
    with trace.use_span(root):
        child = tracer.start_span("SELECT")
    assert not child.is_recording()  # the parent's decision holds
    assert child.get_span_context().trace_id == context.trace_id
    assert exporter.get_finished_spans() == ()
