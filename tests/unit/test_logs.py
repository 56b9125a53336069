"""setup_logging: one handler, JSON or console lines, request and event ids on every line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared import logs
from shared.metrics import make_registry, metrics_response


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_service_and_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging("api", "INFO", "json")
    token = logs.request_id.set("req-1")
    try:
        logging.getLogger("t.json").info("user %s loaded", "u1", extra={"user_id": "u1"})
    finally:
        logs.request_id.reset(token)
    line = capsys.readouterr().err.strip()
    document = orjson.loads(line)
    assert document["message"] == "user u1 loaded"
    assert document["level"] == "info"
    assert document["logger"] == "t.json"
    assert document["service"] == "api"
    assert document["request_id"] == "req-1"
    assert document["user_id"] == "u1"
    assert "event_id" not in document  # unset ids are left out, not null


def test_console_lines_show_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging("invalidator", "DEBUG", "console")
    token = logs.event_id.set("evt-9")
    try:
        logging.getLogger("t.console").debug("purged")
    finally:
        logs.event_id.reset(token)
    line = capsys.readouterr().err.strip()
    assert line.endswith("t.console [event_id=evt-9]: purged")
    assert "DEBUG" in line


def test_setup_twice_leaves_one_handler_and_quiets_noisy_loggers() -> None:
    logs.setup_logging("api")
    logs.setup_logging("api", "DEBUG")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logs._ServiceHandler)]
    assert len(ours) == 1
    assert logging.getLogger("uvicorn.access").level == logging.WARNING


def test_handlers_installed_by_others_are_kept() -> None:
    # A service factory run inside a test used to drop the test runner's capture handler.
    records: list[logging.LogRecord] = []

    class Foreign(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    foreign = Foreign()
    logging.getLogger().addHandler(foreign)
    logs.setup_logging("api")
    logs.setup_logging("api")
    assert foreign in logging.getLogger().handlers
    logging.getLogger("t.kept").warning("still seen")
    assert [r.getMessage() for r in records] == ["still seen"]


def test_exceptions_are_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging("api")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("t.exc").exception("failed")
    document = orjson.loads(capsys.readouterr().err)
    assert "ValueError: boom" in document["exc"]


def test_each_registry_is_separate_and_renders_prometheus_text() -> None:
    first, second = make_registry(), make_registry()
    assert first is not second
    response = metrics_response(first)
    assert response.media_type is not None
    assert response.media_type.startswith("text/plain")
    assert b"process_cpu_seconds_total" in bytes(response.body)


def test_lines_carry_the_current_spans_ids(capsys: pytest.CaptureFixture[str]) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    logs.setup_logging("api", "INFO", "json")
    logging.getLogger("t.trace").info("outside")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("t.trace").info("inside")
        context = span.get_span_context()
    outside, inside = (orjson.loads(line) for line in capsys.readouterr().err.splitlines())
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    logs.setup_logging("api", "INFO", "console")
    with tracer.start_as_current_span("more") as span:
        logging.getLogger("t.trace").info("console")
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert f"trace_id={trace_id} span_id=" in capsys.readouterr().err
