"""Tracing with OpenTelemetry: set up once per process from the standard `OTEL_*` variables.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set;
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off again. On, spans go by
OTLP/HTTP (protobuf) through a batch processor; the SDK itself reads the rest of the standard
variables: `OTEL_SERVICE_NAME` (else the service's own name), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`),
`OTEL_EXPORTER_OTLP_*` (headers, timeout, compression), `OTEL_BSP_*`. Nothing of our own. The
context travels as W3C trace context only (`traceparent`; `OTEL_PROPAGATORS` is not read).

Off means nothing of the SDK exists: `Tracing.spans()` answers None and every caller skips
its tracing code on that one check, so the hot paths run exactly as without tracing.

One trace follows a write across the stream (the messaging conventions' shape):

    api  PATCH /v1/users/{user_id}           SERVER    (`ServerSpans`, every service)
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
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from shared.errors import SettingsError
from shared.tracing.asgi import ServerSpans
from shared.tracing.context import (
    TRACEPARENT,
    current_ids,
    current_traceparent,
    format_traceparent,
    outgoing_headers,
    parse_traceparent,
)
from shared.tracing.spans import MESSAGING_SYSTEM, Attributes, Spans, finish, messaging

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "MESSAGING_SYSTEM",
    "NATIVE_TELEMETRY_OFF",
    "TRACEPARENT",
    "Attributes",
    "ServerSpans",
    "Spans",
    "Tracing",
    "configure_tracing",
    "current_ids",
    "current_traceparent",
    "exporting",
    "finish",
    "format_traceparent",
    "messaging",
    "outgoing_headers",
    "parse_traceparent",
]

# FastAPI's own OpenTelemetry support, off in every service: the spans are ours
# (`ServerSpans`), and left on it asks for the global providers on every request (three
# environment lookups: about 5 µs of a 120 µs near-cache hit) to find them unset.
NATIVE_TELEMETRY_OFF: Final[TelemetryConfig] = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}

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
        spans = self.spans("shared.tracing.asgi")
        if spans is not None and self.provider is not None:
            from shared.tracing.roots import RootDecisions  # noqa: PLC0415 - SDK: when on

            roots = RootDecisions.of(self.provider)
            app.add_middleware(ServerSpans, tracer=spans.tracer, roots=roots)

    async def aclose(self) -> None:
        """Export what is queued and stop the exporter's thread (off the event loop: an
        export is a blocking HTTP call)."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)


def _provider(service: str) -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415 - as above
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    from shared.tracing.roots import PresetIds  # noqa: PLC0415

    resource = Resource.create()
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; else the SDK says "unknown_service".
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    # The SDK's random ids, through a generator the request spans' fast root decision can
    # hand a trace id to (shared.tracing.roots); OTEL_PYTHON_ID_GENERATOR, when set, wins.
    ids = None if os.environ.get("OTEL_PYTHON_ID_GENERATOR") else PresetIds()
    return TracerProvider(resource=resource, id_generator=ids)  # sampler: OTEL_TRACES_SAMPLER


def configure_tracing(service: str) -> Tracing:
    """`Tracing.from_environment` for a process start: a bad variable prints one line and
    exits 2, as a bad setting does."""
    try:
        return Tracing.from_environment(service)
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
