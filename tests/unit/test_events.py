"""Event contracts: every type round-trips through stream fields; every malformed one is typed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from shared.errors import (
    EventError,
    InvalidEventError,
    MalformedEventError,
    UnknownEventTypeError,
)
from shared.events import (
    DATA_FIELD,
    EVENT_TYPES,
    SessionCreated,
    SessionCreatedPayload,
    SessionDestroyed,
    SessionDestroyedPayload,
    SessionEvent,
    SessionRevokedAll,
    SessionRevokedAllPayload,
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    UserEvent,
    UserPasswordChanged,
    UserPasswordChangedPayload,
    UserUpdated,
    UserUpdatedPayload,
    json_schema,
    parse_entry,
    parse_event,
)
from shared.streams import parse_fields

USER = uuid.uuid4()
SID_HASH = "cd" * 32
NOW = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)


def samples() -> list[UserEvent | SessionEvent]:
    return [
        UserCreated(
            source="api", payload=UserCreatedPayload(user_id=USER, email="a@b.c", name="A")
        ),
        UserUpdated(
            source="api", payload=UserUpdatedPayload(user_id=USER, changed=("name", "email"))
        ),
        UserDeleted(source="api", payload=UserDeletedPayload(user_id=USER)),
        UserPasswordChanged(
            source="api",
            payload=UserPasswordChangedPayload(user_id=USER, keep_session=SID_HASH),
        ),
        SessionCreated(
            source="session",
            occurred_at=NOW,
            payload=SessionCreatedPayload(
                user_id=USER,
                session_hash=SID_HASH,
                expires_at=NOW + timedelta(days=1),
                absolute_expires_at=NOW + timedelta(days=7),
            ),
        ),
        SessionDestroyed(
            source="session",
            payload=SessionDestroyedPayload(user_id=USER, session_hash=SID_HASH, reason="rotated"),
        ),
        SessionRevokedAll(
            source="session", payload=SessionRevokedAllPayload(user_id=USER, revoked=3)
        ),
    ]


def test_the_samples_cover_every_type_of_design() -> None:
    design = {
        "user.created",
        "user.updated",
        "user.deleted",
        "user.password_changed",
        "session.created",
        "session.destroyed",
        "session.revoked_all",
    }
    assert set(EVENT_TYPES) == design
    assert {event.type for event in samples()} == design


@pytest.mark.parametrize("event", samples(), ids=lambda e: e.type)
def test_round_trip_through_bytes_fields(event: UserEvent | SessionEvent) -> None:
    # What redis-py hands a consumer without decode_responses: bytes keys and values.
    fields = {k.encode(): v for k, v in event.fields().items()}
    assert parse_entry(fields) == event


@pytest.mark.parametrize("event", samples(), ids=lambda e: e.type)
def test_round_trip_through_text_fields(event: UserEvent | SessionEvent) -> None:
    fields = {k: v.decode() for k, v in event.fields().items()}
    parsed = parse_entry(fields)
    assert parsed == event
    assert type(parsed) is type(event)


def test_the_envelope_on_the_wire_is_designs_shape() -> None:
    event = UserUpdated(
        source="api", occurred_at=NOW, payload=UserUpdatedPayload(user_id=USER, changed=("name",))
    )
    assert list(event.fields()) == [DATA_FIELD] == ["data"]
    document = orjson.loads(event.fields()["data"])
    assert document == {
        "id": str(event.id),
        "type": "user.updated",
        "version": 1,
        "occurred_at": "2026-11-25T10:00:00.123456Z",
        "source": "api",
        "payload": {"user_id": str(USER), "changed": ["name"]},
    }


def test_events_are_frozen_and_ids_unique() -> None:
    first, second = samples()[0], samples()[0]
    assert first.id != second.id
    with pytest.raises(ValidationError):
        first.source = "other"  # type: ignore[misc]  # frozen model: the point of the test


def envelope(**changes: Any) -> dict[str, Any]:
    document = orjson.loads(samples()[0].fields()["data"])
    for key, value in changes.items():
        if value is ...:
            del document[key]
        else:
            document[key] = value
    return dict(document)


def entry(document: Any) -> dict[bytes, bytes]:
    return {b"data": orjson.dumps(document)}


MALFORMED: list[tuple[str, dict[Any, Any], type[EventError], str]] = [
    ("no data field", {b"payload": b"{}"}, MalformedEventError, "no `data` field"),
    ("empty entry", {}, MalformedEventError, "no `data` field"),
    ("bad JSON", {b"data": b"{not json"}, MalformedEventError, "not valid JSON"),
    ("not UTF-8", {b"data": b"\xff\xfe"}, MalformedEventError, "not UTF-8"),
    ("JSON array", entry([1, 2]), MalformedEventError, "must be a JSON object"),
    ("missing type", entry(envelope(type=...)), InvalidEventError, "type"),
    ("type not a string", entry(envelope(type=7)), InvalidEventError, "type"),
    ("unknown type", entry(envelope(type="user.exploded")), UnknownEventTypeError, "user.exploded"),
    ("missing id", entry(envelope(id=...)), InvalidEventError, "id"),
    ("missing payload", entry(envelope(payload=...)), InvalidEventError, "payload"),
    ("missing source", entry(envelope(source=...)), InvalidEventError, "source"),
    ("missing version", entry(envelope(version=...)), InvalidEventError, "version"),
    ("missing date", entry(envelope(occurred_at=...)), InvalidEventError, "occurred_at"),
    ("wrong version", entry(envelope(version=2)), InvalidEventError, "version"),
    ("version as text", entry(envelope(version="one")), InvalidEventError, "version"),
    ("id not a uuid", entry(envelope(id="x")), InvalidEventError, "id"),
    ("date not a date", entry(envelope(occurred_at="yesterday")), InvalidEventError, "occurred_at"),
    ("payload a list", entry(envelope(payload=[])), InvalidEventError, "payload"),
    (
        "payload field wrong type",
        entry(envelope(payload={"user_id": 12, "email": "a@b.c", "name": "A"})),
        InvalidEventError,
        "payload.user_id",
    ),
    (
        "payload field missing",
        entry(envelope(payload={"user_id": str(USER), "name": "A"})),
        InvalidEventError,
        "payload.email",
    ),
    ("unknown envelope field", entry(envelope(extra=1)), InvalidEventError, "extra"),
]


@pytest.mark.parametrize(
    ("fields", "error", "mentions"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_entries_give_a_typed_error(
    fields: dict[Any, Any], error: type[EventError], mentions: str
) -> None:
    with pytest.raises(error) as caught:
        parse_entry(fields)
    assert type(caught.value) is error
    assert mentions in caught.value.reason
    assert caught.value.code in {"malformed", "unknown_type", "invalid"}


def test_unknown_type_carries_the_type() -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        parse_event(orjson.dumps(envelope(type="order.placed")))
    assert caught.value.event_type == "order.placed"


def test_json_schema_has_every_type() -> None:
    schema = json_schema()
    text = orjson.dumps(schema).decode()
    for name in EVENT_TYPES:
        assert f'"{name}"' in text
    assert schema["discriminator"]["propertyName"] == "type"
    created = schema["$defs"]["UserCreated"]
    assert set(created["required"]) == {"id", "type", "version", "occurred_at", "source", "payload"}


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_is_optional_and_absent_when_unset() -> None:
    event = UserUpdated(source="api", payload=UserUpdatedPayload(user_id=USER))
    assert event.traceparent is None
    assert "traceparent" not in orjson.loads(event.to_json())  # the bytes of before the field
    traced = event.model_copy(update={"traceparent": TRACEPARENT})
    document = orjson.loads(traced.to_json())
    assert document["traceparent"] == TRACEPARENT
    assert document["version"] == 1  # an optional field: the envelope version is unchanged
    assert parse_entry(traced.fields()) == traced
    assert parse_fields({k.encode(): v for k, v in traced.fields().items()}) == traced


@pytest.mark.parametrize("value", [None, "not a traceparent", TRACEPARENT.upper()])
def test_any_traceparent_string_or_null_parses(value: str | None) -> None:
    # Tracing metadata never dead-letters an event: a bad one is ignored by the consumer.
    document = orjson.loads(
        UserDeleted(source="x", payload=UserDeletedPayload(user_id=USER)).to_json()
    )
    document["traceparent"] = value
    assert parse_entry({"data": orjson.dumps(document)}).traceparent == value


def test_json_schema_documents_traceparent_as_optional() -> None:
    for name, definition in json_schema()["$defs"].items():
        if "payload" in definition.get("properties", {}):
            assert "traceparent" in definition["properties"], name
            assert "traceparent" not in definition["required"], name
