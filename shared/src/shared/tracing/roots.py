"""The sampling decision of a request that starts a trace, without the SDK's `start_span`
when it is not sampled. Imported only with tracing on (it needs the SDK).

With the production sampler (`parentbased_traceidratio`), a request with no incoming context
is recorded when its new trace id passes the ratio: `trace_id & TRACE_ID_LIMIT < bound`, the
rule of the SDK's `TraceIdRatioBased`. The SDK's `start_span` takes that decision through a
chain of context lookups and builds a non-recording span: about 9 µs, paid by the 99 % of
requests it then drops — 12-19 % of a near-cache hit's CPU (bench/README.md#tracing).
`RootDecisions.start` draws the trace id itself, applies the same rule, and for a dropped
request builds the same non-recording span (new trace id, new span id, flags 00) directly;
for a recorded one it hands the drawn id to the SDK (`PresetIds`) and calls `start_span`,
so the SDK's decision on that id is the same and the span is the SDK's own.

Any other sampler (or `OTEL_PYTHON_ID_GENERATOR` set) leaves every request to the SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Tracer

_EMPTY = Context()  # no parent: a root span whatever is current


class PresetIds(RandomIdGenerator):
    """The SDK's random ids, except the trace id of the next root span started inside
    `preset(trace_id)` in this context."""

    def __init__(self) -> None:
        self._next: ContextVar[int | None] = ContextVar("preset_trace_id", default=None)

    def generate_trace_id(self) -> int:
        preset = self._next.get()
        return super().generate_trace_id() if preset is None else preset

    def random_trace_id(self) -> int:
        return super().generate_trace_id()

    @contextmanager
    def preset(self, trace_id: int) -> Iterator[None]:
        token = self._next.set(trace_id)
        try:
            yield
        finally:
            self._next.reset(token)


class RootDecisions:
    """Root spans of SERVER requests under a parent-based trace-id-ratio sampler."""

    __slots__ = ("bound", "ids")

    def __init__(self, ids: PresetIds, bound: int) -> None:
        self.ids = ids
        self.bound = bound

    @classmethod
    def of(cls, provider: TracerProvider) -> RootDecisions | None:
        """The fast path for this provider, or None when its sampler or ids are others."""
        sampler, ids = provider.sampler, provider.id_generator
        # ParentBased keeps its root sampler private; a renamed attribute only turns the
        # fast path off (tests/unit/test_tracing.py checks it is on for this sampler).
        root = getattr(sampler, "_root", None)
        if (
            isinstance(sampler, ParentBased)
            and isinstance(root, TraceIdRatioBased)
            and isinstance(ids, PresetIds)
        ):
            return cls(ids, root.bound)
        return None

    def start(self, tracer: Tracer, name: str) -> Span:
        """A SERVER span starting a new trace: the SDK's when the ratio samples its trace
        id, else a non-recording span carrying the ids (for log lines and propagation)."""
        trace_id = self.ids.random_trace_id()
        if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self.bound:
            with self.ids.preset(trace_id):
                return tracer.start_span(name, context=_EMPTY, kind=SpanKind.SERVER)
        return NonRecordingSpan(SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False))
