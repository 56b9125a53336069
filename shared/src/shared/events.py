"""Event contracts: the envelope and every payload, as frozen pydantic models.

Every stream entry carries one envelope, JSON in the single field `data`. `parse_entry`
turns an entry's fields into the typed event or raises an `EventError` whose `reason`
says what is wrong — the consumer dead-letters it with that reason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import InvalidEventError, MalformedEventError, UnknownEventTypeError

DATA_FIELD: Final = "data"
ENVELOPE_VERSION: Final = 1
# Envelope fields a parsed entry must carry: the model's defaults (a fresh id, now) would
# otherwise make one entry delivered twice look like two events.
WIRE_FIELDS: Final = ("id", "type", "version", "occurred_at", "source", "payload")
# The one optional envelope field (docs/decisions: tracing): absent means "not traced".
OPTIONAL_FIELD: Final = "traceparent"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    # Defaults are for building events; on the wire every field is present, and the
    # exported schema says so.
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )


class UserPayload(_Frozen):
    user_id: uuid.UUID


class UserCreatedPayload(UserPayload):
    email: str
    name: str


def _absent(value: object) -> bool:
    return value is None


class UserUpdatedPayload(UserPayload):
    changed: tuple[str, ...] = Field(default=(), description="names of the fields that changed")
    version: int | None = Field(
        default=None,
        description="the row's version after the change (its updated_at in µs since the "
        "epoch): a purge drops only a cached value older than this; absent: drop whatever "
        "is cached",
        exclude_if=_absent,  # left off the wire when unknown: older producers' shape
    )


class UserDeletedPayload(UserPayload):
    pass


class UserPasswordChangedPayload(UserPayload):
    keep_session: str | None = Field(
        default=None, description="hash of the session that made the change; it survives"
    )
    version: int | None = Field(
        default=None,
        description="as in user.updated: the row's version after the change",
        exclude_if=_absent,
    )


class SessionPayload(_Frozen):
    user_id: uuid.UUID
    session_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class SessionCreatedPayload(SessionPayload):
    expires_at: datetime
    absolute_expires_at: datetime


class SessionDestroyedPayload(SessionPayload):
    reason: Literal["logout", "rotated", "expired", "evicted"] = "logout"


class SessionRevokedAllPayload(_Frozen):
    user_id: uuid.UUID
    revoked: int = Field(ge=0)
    reason: str = "requested"


class _Envelope(_Frozen):
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    version: Literal[1] = ENVELOPE_VERSION
    occurred_at: datetime = Field(default_factory=utcnow)
    source: str = Field(min_length=1, max_length=64)
    # Optional, unlike every other envelope field: tracing metadata, absent when the producer
    # traced nothing. Never validated beyond "a string": a malformed one is ignored by the
    # consumer (`shared.tracing.parse_traceparent`), never a reason to dead-letter an event.
    traceparent: str | None = Field(
        default=None,
        description=(
            "W3C trace context of the write that produced the event "
            "(`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`); consumers continue "
            "that trace. Optional: absent when the producer did not trace the write."
        ),
    )

    def to_json(self) -> bytes:
        # Left out when unset, so an untraced event's bytes are what they were before the
        # field existed (and a consumer that predates it still parses them).
        skip = {OPTIONAL_FIELD} if self.traceparent is None else None
        return orjson.dumps(self.model_dump(mode="json", exclude=skip))

    def fields(self) -> dict[str, bytes]:
        """The stream entry's fields for `XADD`."""
        return {DATA_FIELD: self.to_json()}


class UserCreated(_Envelope):
    type: Literal["user.created"] = "user.created"
    payload: UserCreatedPayload


class UserUpdated(_Envelope):
    type: Literal["user.updated"] = "user.updated"
    payload: UserUpdatedPayload


class UserDeleted(_Envelope):
    type: Literal["user.deleted"] = "user.deleted"
    payload: UserDeletedPayload


class UserPasswordChanged(_Envelope):
    type: Literal["user.password_changed"] = "user.password_changed"
    payload: UserPasswordChangedPayload


class SessionCreated(_Envelope):
    type: Literal["session.created"] = "session.created"
    payload: SessionCreatedPayload


class SessionDestroyed(_Envelope):
    type: Literal["session.destroyed"] = "session.destroyed"
    payload: SessionDestroyedPayload


class SessionRevokedAll(_Envelope):
    type: Literal["session.revoked_all"] = "session.revoked_all"
    payload: SessionRevokedAllPayload


UserEvent = UserCreated | UserUpdated | UserDeleted | UserPasswordChanged
SessionEvent = SessionCreated | SessionDestroyed | SessionRevokedAll
Event = Annotated[UserEvent | SessionEvent, Field(discriminator="type")]

EVENT_TYPES: Final[dict[str, type[_Envelope]]] = {
    model.model_fields["type"].default: model
    for model in (
        UserCreated,
        UserUpdated,
        UserDeleted,
        UserPasswordChanged,
        SessionCreated,
        SessionDestroyed,
        SessionRevokedAll,
    )
}
EVENT_ADAPTER: Final[TypeAdapter[UserEvent | SessionEvent]] = TypeAdapter(Event)


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEventError("`data` is not UTF-8") from None
    return str(value)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "envelope"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_event(raw: str | bytes) -> UserEvent | SessionEvent:
    """The event in one envelope's JSON, or an `EventError` saying what is wrong."""
    try:
        document: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(f"`data` is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedEventError("`data` must be a JSON object")
    event_type = document.get("type")
    if not isinstance(event_type, str):
        raise InvalidEventError("type: missing or not a string")
    if event_type not in EVENT_TYPES:
        raise UnknownEventTypeError(event_type)
    missing = [name for name in WIRE_FIELDS if name not in document]
    if missing:
        raise InvalidEventError(f"{event_type}: missing {', '.join(missing)}")
    try:
        return EVENT_ADAPTER.validate_python(document)
    except ValidationError as exc:
        raise InvalidEventError(f"{event_type}: {_describe(exc)}") from None


def parse_entry(fields: dict[Any, Any]) -> UserEvent | SessionEvent:
    """The event in a stream entry's fields (`data` holds the envelope)."""
    raw = fields.get(DATA_FIELD, fields.get(DATA_FIELD.encode()))
    if raw is None:
        names = sorted(_text(k) for k in fields)
        raise MalformedEventError(f"entry has no `data` field (fields: {names})")
    return parse_event(_text(raw).encode())


def json_schema() -> dict[str, Any]:
    """JSON Schema of the event union, as exported to docs/."""
    schema = EVENT_ADAPTER.json_schema(mode="serialization")
    # Serialization schemas mark defaulted fields required (every other field is on the
    # wire); the optional one is not.
    for definition in schema.get("$defs", {}).values():
        required = definition.get("required")
        if required and OPTIONAL_FIELD in required and "payload" in definition["properties"]:
            required.remove(OPTIONAL_FIELD)
    return schema
