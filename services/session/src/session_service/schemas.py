"""Request and response bodies of the session HTTP API (docs/architecture.md#http)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from session_service.domain import (
    HASH_PREFIX_LEN,
    IssuedSession,
    SessionRecord,
    encode_data,
    from_ms,
)

# Sessions carry a few flags, not documents: every check reads the whole record.
MAX_DATA_BYTES: Final = 4096


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UUID
    data: dict[str, Any] = Field(default_factory=dict, description="small JSON object")

    @field_validator("data")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(encode_data(value)) > MAX_DATA_BYTES:
            raise ValueError(f"data is over {MAX_DATA_BYTES} bytes as JSON")
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            # An escaped lone surrogate is JSON but not text (I-JSON, RFC 7493, forbids it).
            raise ValueError("data holds a lone surrogate: not valid Unicode") from None
        return value


class Session(BaseModel):
    user_id: UUID
    data: dict[str, Any]
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime = Field(description="idle expiry; moves on refresh")
    absolute_expires_at: datetime = Field(description="hard limit; never moves")

    @classmethod
    def of(cls, record: SessionRecord) -> Session:
        return cls(**_fields(record))


class IssuedSessionBody(Session):
    id: str = Field(description="the session id: shown in this response only")

    @classmethod
    def issued(cls, issued: IssuedSession) -> IssuedSessionBody:
        return cls(id=issued.session_id, **_fields(issued.record))


class SessionSummary(Session):
    hash_prefix: str = Field(
        description="first characters of the id's SHA-256: tells sessions apart, opens none"
    )

    @classmethod
    def summary(cls, record: SessionRecord) -> SessionSummary:
        return cls(hash_prefix=record.session_hash[:HASH_PREFIX_LEN], **_fields(record))


class SessionList(BaseModel):
    items: list[SessionSummary]


class Revoked(BaseModel):
    revoked: int = Field(ge=0)


def _fields(record: SessionRecord) -> dict[str, Any]:
    return {
        "user_id": UUID(record.user_id),
        "data": record.data,
        "created_at": from_ms(record.created_at),
        "last_seen_at": from_ms(record.last_seen_at),
        "expires_at": from_ms(record.expires_at),
        "absolute_expires_at": from_ms(record.absolute_expires_at),
    }
