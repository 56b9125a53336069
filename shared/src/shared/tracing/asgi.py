"""A SERVER span per HTTP request, as pure ASGI middleware (`Tracing.instrument` adds it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from shared.tracing.context import parse_traceparent
from shared.tracing.spans import finish

_EMPTY = otel_context.Context()

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from shared.tracing.roots import RootDecisions


class ServerSpans:
    """Pure ASGI middleware: a SERVER span per HTTP request, current while the app runs.

    Why not the FastAPI instrumentation (`opentelemetry-instrumentation-fastapi`): measured
    on the cache-hit path (bench/api_read.py, 1 % sampler) it cost 45-50 % of the api's
    requests/s — it matches the route a second time, builds a dozen attributes and records
    three histograms for every request, sampled or not. Here an unsampled request costs a
    header scan, the sampler's decision and a context attach: the span name and attributes
    are built only for a request that is recorded, and a request starting a trace that the
    ratio sampler drops does not even reach the SDK (`roots`, `shared.tracing.roots`).

    The caller's W3C `traceparent` header is continued (`tracestate` is not carried). The
    name is `<METHOD> <route template>` (`scope["route"]`, set by the router and by the
    api's near-cache fast path), never the raw path, which is not recorded at all.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer, roots: RootDecisions | None = None) -> None:
        self.app = app
        self.tracer = tracer
        self.roots = roots  # the fast root decision (shared.tracing.roots), when it applies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _incoming(scope)
        if incoming is None and self.roots is not None:
            # A new trace (outermost middleware: no span is current before this one).
            span = self.roots.start(self.tracer, scope["method"])
            context = trace.set_span_in_context(span, _EMPTY)
        else:
            span = self.tracer.start_span(scope["method"], context=incoming, kind=SpanKind.SERVER)
            context = trace.set_span_in_context(span)
        token = otel_context.attach(context)
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
