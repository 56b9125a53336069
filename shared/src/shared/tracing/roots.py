"""The sampling decision of a request that starts a trace, without the SDK's `start_span`
when it is not sampled. Imported only with tracing on (it needs the SDK).

With the production sampler (`parentbased_traceidratio`), a request with no incoming context
is recorded when its new trace id passes the ratio: `trace_id & TRACE_ID_LIMIT < bound`, the
rule of the SDK's `TraceIdRatioBased`. The SDK's `start_span` takes that decision through a
chain of context lookups and builds a non-recording span: about 9 µs, paid by the 99 % of
requests it then drops — 12-19 % of a near-cache hit's CPU (bench/README.md#tracing).
`RootDecisions.start` draws the 64 bits the rule reads, applies it, and for a dropped request
returns a non-recording span whose ids (the rest of a new trace id, a new span id, flags 00)
are drawn only when something asks for them — a log line, an outgoing call's `traceparent`,
a child span's sampler (`UnsampledRoot`): to a reader, the same span the SDK would have
built. For a recorded request it hands the whole drawn id to the SDK (`PresetIds`) and calls
`start_span`, so the SDK's decision on that id is the same and the span is the SDK's own.

Any other sampler (or `OTEL_PYTHON_ID_GENERATOR` set) leaves every request to the SDK.
"""

from __future__ import annotations

import random
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

    @staticmethod
    def trace_id(low: int) -> int:
        """A new random trace id whose lower 64 bits (all the ratio rule reads) are `low`."""
        return (random.getrandbits(64) << 64) | low or 1

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
        id, else a non-recording span whose ids are drawn when first asked for."""
        low = random.getrandbits(64)
        if low < self.bound:  # TraceIdRatioBased: trace_id & TRACE_ID_LIMIT < bound
            with self.ids.preset(self.ids.trace_id(low)):
                return tracer.start_span(name, context=_EMPTY, kind=SpanKind.SERVER)
        return UnsampledRoot(self.ids, low)


class UnsampledRoot(NonRecordingSpan):
    """The span of a request the sampler dropped, as the SDK would build it (a new trace id
    and span id, flags 00), its ids drawn on the first `get_span_context()`."""

    def __init__(self, ids: PresetIds, low: int) -> None:
        self._ids = ids
        self._low = low
        self._drawn: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        if self._drawn is None:
            trace_id = self._ids.trace_id(self._low)
            self._drawn = SpanContext(trace_id, self._ids.generate_span_id(), is_remote=False)
        return self._drawn

    def __repr__(self) -> str:
        return f"UnsampledRoot({self._drawn!r})"
