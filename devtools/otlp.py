"""A tiny OTLP/HTTP trace receiver for tests and benchmarks: the services export to it as to a
collector (`OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.url>`, protobuf over HTTP), and it keeps
every span in memory, flattened to `ReceivedSpan`.

    with OtlpReceiver() as receiver:
        ...  # start processes with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url
        spans = receiver.trace(trace_id)

Only `POST /v1/traces` with an uncompressed or gzip body is understood; anything else is
answered 404/415, as a collector would.
"""

from __future__ import annotations

import argparse
import gzip
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_KINDS = {
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_id: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each link
    error: bool
    events: tuple[str, ...] = field(default=())

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _flatten(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(
                ReceivedSpan(
                    service=service,
                    name=span.name,
                    kind=_KINDS.get(span.kind, "UNSPECIFIED"),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex() or None,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                    error=span.status.code == span.status.STATUS_CODE_ERROR,
                    events=tuple(event.name for event in span.events),
                )
                for span in scope_spans.spans
            )
    return spans


class _Handler(BaseHTTPRequestHandler):
    receiver: ClassVar[OtlpReceiver]

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/traces":
            self._answer(HTTPStatus.NOT_FOUND, b"")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if "protobuf" not in (self.headers.get("Content-Type") or ""):
            self._answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"")
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.receiver.add(_flatten(request))
        self._answer(HTTPStatus.OK, ExportTraceServiceResponse().SerializeToString())

    def _answer(self, status: HTTPStatus, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per export batch would drown a test's output."""


class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf trace exports on 127.0.0.1 (a free port) in a thread."""

    def __init__(self) -> None:
        handler = type("Handler", (_Handler,), {"receiver": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans() if span.trace_id == trace_id]

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def receiver_process(seconds: float = 3600.0) -> tuple[subprocess.Popen[str], str]:
    """`python -m devtools.otlp` as a child process; it and the URL it listens on. Stop it
    with `terminate()` (by its PID)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.otlp", "--seconds", str(seconds)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise RuntimeError("the OTLP receiver did not start")
    return process, url


def main(argv: list[str] | None = None) -> None:
    """`python -m devtools.otlp [--seconds N]`: a receiver as a process of its own (so its
    parsing never competes for a measured process's GIL); prints its URL, then serves until
    SIGTERM or the time bound, and says how many spans it received."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with OtlpReceiver() as receiver:
        print(receiver.url, flush=True)
        stopping.wait(args.seconds)
        print(f"otlp receiver: {len(receiver.spans())} spans received", file=sys.stderr)


if __name__ == "__main__":
    main()
