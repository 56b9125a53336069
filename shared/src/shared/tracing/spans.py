"""Span helpers shared by the components that trace: one `Spans` per instrumentation scope,
the messaging attributes, and ending a span with its error."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)
from opentelemetry.util.types import AttributeValue

from shared.tracing.context import ODD_DIGITS, SAMPLED_DIGIT, parse_traceparent

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
        if self.sampled_only and traceparent[SAMPLED_DIGIT : SAMPLED_DIGIT + 1] not in ODD_DIGITS:
            return None
        context = parse_traceparent(traceparent)
        if context is None or (self.sampled_only and not context.trace_flags.sampled):
            return None
        return context


def finish(span: Span, error: BaseException | None = None) -> None:
    """End `span`, marked failed with `error` when there is one."""
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
