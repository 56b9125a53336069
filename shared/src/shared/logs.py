"""Logging set up once per process: JSON lines in production, readable lines in development.

`request_id` and `event_id` live in context variables; a filter puts them on every record,
so each line of one request or one event can be found together. While a span is current
(tracing on: `shared.tracing`), its `trace_id` and `span_id` go on the record too, so a line
leads to its trace and a trace to its lines.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Final

import orjson

from shared.tracing import current_ids

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
event_id: ContextVar[str | None] = ContextVar("event_id", default=None)

_RESERVED: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id.get()
        record.event_id = event_id.get()
        ids = current_ids()
        record.trace_id, record.span_id = ids if ids is not None else (None, None)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _RESERVED and value is not None
        )
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(ids)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{k}={getattr(record, k)}"
            for k in ("request_id", "event_id", "trace_id", "span_id")
            if getattr(record, k, None)
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


class _ServiceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler `setup_logging` installs: known by its class when set up again."""


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger: one stderr handler of ours, JSON or console.

    Called again, it replaces its own handler; handlers others installed on the root (a test
    runner's capture, an APM's exporter) are left in place.
    """
    handler = _ServiceHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _ServiceHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Per-message INFO from the broker and access logs cost throughput and say little.
    for noisy in ("faststream", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
