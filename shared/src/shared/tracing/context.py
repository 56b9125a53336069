"""The trace context on the wire: W3C `traceparent` values, parsed and written, and the
current span's ids (for events, outgoing calls and log lines)."""

from __future__ import annotations

import re
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

TRACEPARENT: Final = "traceparent"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# The flags' second hex digit sits at a fixed offset in every version (`vv-<32>-<16>-ff`);
# its lowest bit is "sampled".
SAMPLED_DIGIT: Final = 54
ODD_DIGITS: Final = frozenset("13579bdf")
_INVALID_TRACE: Final = "0" * 32
_INVALID_SPAN: Final = "0" * 16


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
