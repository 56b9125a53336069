"""Tracing with OpenTelemetry: set up once per process from the standard `OTEL_*` variables.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set;
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off again. On, spans go by
OTLP/HTTP (protobuf) through a batch processor; the SDK itself reads the rest of the standard
variables: `OTEL_SERVICE_NAME` (else the service's own name), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`),
`OTEL_EXPORTER_OTLP_*` (headers, timeout, compression), `OTEL_BSP_*`, `OTEL_PROPAGATORS` (the
HTTP side), `OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`. Nothing of our own.

Off means nothing of the SDK exists: `Tracing.spans()` answers None and every caller skips
its tracing code on that one check, so the hot paths run exactly as without tracing.

One trace follows a write across the stream (the messaging conventions' shape):

    api  PATCH /v1/users/{user_id}           SERVER    (FastAPI instrumentation)
         ├─ user write                       INTERNAL  the transaction; its SQL statements
         │   │                                         below it (SQLAlchemy instrumentation)
         │   ├─ publish app:events:users     PRODUCER  the outbox relay's XADD, later
         │   ├─ process app:events:users     CONSUMER  group invalidator, linked to `user write`
         │   │   ├─ purge                              DEL value+lease, INCR generation
         │   │   └─ announce                           PUBLISH of the purge notices
         │   └─ process app:events:users     CONSUMER  group session, linked
         │       └─ revoke sessions
         ├─ purge                            INTERNAL  the writer's own purge
         └─ announce                         INTERNAL  its PUBLISH to the near caches

The context crosses the outbox and the stream as a W3C `traceparent`: the outbox row's column
and the envelope's optional field (`shared.events`), written inside the write's span — for a
sampled write only. An unsampled write's context would only tell every consumer to record
nothing, at the price of 70 more bytes to read and validate in every event (about +4 % CPU
per event in the invalidator's drain); without one, an event is handled exactly as with
tracing off. Redis commands are attributes and events on these spans, never a span each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.util.types import AttributeValue

from shared.errors import SettingsError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACEPARENT: Final = "traceparent"
# Attribute values shared by the stream spans (messaging semantic conventions).
MESSAGING_SYSTEM: Final = "redis"

Attributes = Mapping[str, AttributeValue]


def messaging(
    operation: str, destination: str, extra: Attributes | None = None
) -> dict[str, AttributeValue]:
    """The messaging attributes of a span that sends to or processes from `destination`,
    plus `extra`."""
    return {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
        **(extra or {}),
    }


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# The flags' second hex digit sits at a fixed offset in every version (`vv-<32>-<16>-ff`);
# its lowest bit is "sampled".
_SAMPLED_DIGIT: Final = 54
_ODD: Final = frozenset("13579bdf")
_INVALID_TRACE: Final = "0" * 32
_INVALID_SPAN: Final = "0" * 16
_ENDPOINTS: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS: Final = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_SUPPORTED_PROTOCOL: Final = "http/protobuf"


def exporting(environ: Mapping[str, str]) -> bool:
    """Whether these variables turn tracing on (an OTLP endpoint, and no switch saying off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINTS)


def _check_protocol(environ: Mapping[str, str]) -> None:
    for name in _PROTOCOLS:
        value = environ.get(name, "").strip()
        if value and value != _SUPPORTED_PROTOCOL:
            raise SettingsError(
                f"invalid setting {name}={value!r}: only {_SUPPORTED_PROTOCOL} is exported"
            )


class Spans:
    """Starts the spans of one instrumentation scope (see the module docstring for the shape).

    `sampled_only`: the sampler follows its parent (every `parentbased_*` sampler), so a
    context whose sampled flag is off can only yield spans that are never recorded: those are
    not started at all (an unsampled entry costs the consumer a flag check, nothing more).
    """

    __slots__ = ("sampled_only", "tracer")

    def __init__(self, tracer: Tracer, *, sampled_only: bool) -> None:
        self.tracer = tracer
        self.sampled_only = sampled_only

    def current(
        self, name: str, attributes: Attributes | None = None, kind: SpanKind = SpanKind.INTERNAL
    ) -> contextlib.AbstractContextManager[Span]:
        """A span, child of the current one, current itself inside the `with`."""
        return self.tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def follow(
        self,
        parent: SpanContext,
        name: str,
        *,
        kind: SpanKind,
        attributes: Attributes | None = None,
        link: bool = False,
    ) -> Span:
        """A started span continuing the remote context `parent` (from `parent()`): its
        child, and linked to it too when `link` (a consumer's span)."""
        return self.tracer.start_span(
            name,
            context=trace.set_span_in_context(NonRecordingSpan(parent)),
            kind=kind,
            attributes=attributes,
            links=(Link(parent),) if link else None,
        )

    def child(
        self, parent: Span | None, name: str, attributes: Attributes | None = None
    ) -> Span | None:
        """A started child of `parent` when `parent` is recorded; else None."""
        if parent is None or not parent.is_recording():
            return None
        return self.tracer.start_span(
            name, context=trace.set_span_in_context(parent), attributes=attributes
        )

    def parent(self, traceparent: str | None) -> SpanContext | None:
        """The remote context in a `traceparent` worth continuing, or None: absent,
        malformed, or (with a parent-based sampler) not sampled. Called once per stream
        entry: an unsampled one is turned away on its flags' last digit, before any parsing."""
        if traceparent is None:
            return None
        if self.sampled_only and traceparent[_SAMPLED_DIGIT : _SAMPLED_DIGIT + 1] not in _ODD:
            return None
        context = parse_traceparent(traceparent)
        if context is None or (self.sampled_only and not context.trace_flags.sampled):
            return None
        return context


class Tracing:
    """The process's tracer provider, or none (off). Built once by each service's factory;
    `aclose()` in its lifespan flushes what is still queued."""

    __slots__ = ("provider",)

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider

    @classmethod
    def from_environment(cls, service: str, environ: Mapping[str, str] | None = None) -> Tracing:
        """Off unless the variables ask for OTLP export; `SettingsError` for an exporter
        protocol other than http/protobuf."""
        environ = os.environ if environ is None else environ
        if not exporting(environ):
            return cls()
        _check_protocol(environ)
        # Imported here: a process with tracing off never loads the SDK and the exporter
        # (about 60 ms of start-up and their memory, in every process).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        provider = _provider(service)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def spans(self, scope: str) -> Spans | None:
        """The span helper of one instrumentation scope (a module or component name); None
        when tracing is off."""
        if self.provider is None:
            return None
        from opentelemetry.sdk.trace.sampling import ParentBased  # noqa: PLC0415 - SDK: when on

        return Spans(
            self.provider.get_tracer(scope),
            sampled_only=isinstance(self.provider.sampler, ParentBased),
        )

    def instrument(self, app: FastAPI) -> None:
        """A SERVER span per HTTP request (`ServerSpans`, outermost when added last);
        nothing when off."""
        spans = self.spans("shared.tracing.http")
        if spans is not None:
            app.add_middleware(ServerSpans, tracer=spans.tracer)

    async def aclose(self) -> None:
        """Export what is queued and stop the exporter's thread (off the event loop: an
        export is a blocking HTTP call)."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)


def _provider(service: str) -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415 - as above
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    resource = Resource.create()
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; else the SDK says "unknown_service".
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    return TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER


def configure_tracing(service: str) -> Tracing:
    """`Tracing.from_environment` for a process start: a bad variable prints one line and
    exits 2, as a bad setting does."""
    try:
        return Tracing.from_environment(service)
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None


# -- context on the wire ------------------------------------------------------------------


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context of a W3C `traceparent`, or None when it is not a valid one
    (the rules of the W3C parser: version ff and all-zero ids are invalid, a version-00 value
    has nothing after its flags, later versions may append fields)."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _INVALID_TRACE or span_id == _INVALID_SPAN:
        return None
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
    )


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent(*, sampled_only: bool = False) -> str | None:
    """The `traceparent` of the current span, or None when no valid span is current (or,
    with `sampled_only`, when it is not sampled)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or (sampled_only and not context.trace_flags.sampled):
        return None
    return format_traceparent(context)


def outgoing_headers() -> dict[str, str] | None:
    """`{"traceparent": ...}` for an outgoing HTTP call, None when no span is current."""
    traceparent = current_traceparent()
    return None if traceparent is None else {TRACEPARENT: traceparent}


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None without one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


# -- HTTP ---------------------------------------------------------------------------------


class ServerSpans:
    """Pure ASGI middleware: a SERVER span per HTTP request, current while the app runs.

    Why not the FastAPI instrumentation (`opentelemetry-instrumentation-fastapi`): measured
    on the cache-hit path (bench/api_read.py, 1 % sampler) it cost 45-50 % of the api's
    requests/s — it matches the route a second time, builds a dozen attributes and records
    three histograms for every request, sampled or not. Here an unsampled request costs a
    header scan, the sampler's decision and a context attach: the span name and attributes
    are built only for a request that is recorded.

    The caller's W3C `traceparent` header is continued (`tracestate` is not carried). The
    name is `<METHOD> <route template>` (`scope["route"]`, set by the router and by the
    api's near-cache fast path), never the raw path, which is not recorded at all.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = self.tracer.start_span(
            scope["method"], context=_incoming(scope), kind=SpanKind.SERVER
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            if span.is_recording():
                await self._recorded(span, scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)

    async def _recorded(self, span: Span, scope: Scope, receive: Receive, send: Send) -> None:
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _describe_request(span, scope, status or 500)
            finish(span, error)


def _incoming(scope: Scope) -> otel_context.Context | None:
    """The context of the request's `traceparent` header; None (a new trace) without one."""
    for name, value in scope["headers"]:
        if name == b"traceparent":
            parent = parse_traceparent(value.decode("latin-1"))
            return None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
    return None


def _describe_request(span: Span, scope: Scope, status: int) -> None:
    method: str = scope["method"]
    template = getattr(scope.get("route"), "path", None)
    span.update_name(f"{method} {template}" if template else method)
    client = scope.get("client")
    # No `url.path`: the session service's paths hold session ids (bearer secrets), which
    # must not reach a tracing backend; the route template says which route it was.
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
        "http.response.status_code": status,
    }
    if template:
        attributes["http.route"] = template
    if client:
        attributes["client.address"] = client[0]
    span.set_attributes(attributes)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


# -- ending spans -------------------------------------------------------------------------


def finish(span: Span, error: BaseException | None = None) -> None:
    """End `span`, marked failed with `error` when there is one."""
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


@contextlib.contextmanager
def finishing(span: Span | None) -> Iterator[Span | None]:
    """`with finishing(span):` ends `span` (if any) on the way out, failed when the block
    raised; the span is not made current."""
    if span is None:
        yield None
        return
    try:
        yield span
    except BaseException as exc:
        finish(span, exc)
        raise
    finish(span)
