"""Session records: the pure part of the service (no I/O). Ids: `shared.sessionids`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

import orjson

from shared.replication import Replication

T = TypeVar("T")

HASH_PREFIX_LEN: Final = 16  # what a listing shows of a session's hash


def encode_data(data: dict[str, Any]) -> bytes:
    """A session's `data` as stored: the caller's JSON kept exactly. The standard library's
    encoder, not orjson: orjson refuses integers beyond 64 bits and lone surrogates, and
    reads big integers back as floats — any JSON a client sends must come back unchanged."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def decode_data(raw: bytes | str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


def from_ms(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What Redis holds under `Keys.session(owner, hash)`; times are server-clock ms."""

    session_hash: str
    user_id: str
    data: dict[str, Any]
    created_at: int
    last_seen_at: int
    expires_at: int
    absolute_expires_at: int

    @classmethod
    def from_json(cls, session_hash: str, raw: bytes | str) -> SessionRecord:
        doc = orjson.loads(raw)
        # `data` is stored as JSON text inside the record: the Lua scripts re-encode the
        # record with cjson, which would turn an empty object into an empty array.
        return cls(
            session_hash=session_hash,
            user_id=doc["user_id"],
            data=decode_data(doc["data"]),
            created_at=int(doc["created_at"]),
            last_seen_at=int(doc["last_seen_at"]),
            expires_at=int(doc["expires_at"]),
            absolute_expires_at=int(doc["absolute_expires_at"]),
        )


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A record together with its id: only create and rotate ever hold one."""

    session_id: str
    record: SessionRecord


@dataclass(frozen=True, slots=True)
class Created:
    issued: IssuedSession
    evicted: tuple[str, ...]  # hashes of the user's oldest sessions dropped by the cap
    replication: Replication  # what was known of a replica's copy when it was acknowledged


@dataclass(frozen=True, slots=True)
class Rotated:
    issued: IssuedSession
    old_hash: str
    replication: Replication


@dataclass(frozen=True, slots=True)
class Written(Generic[T]):
    """A write's result, and what was known of a replica's copy of it."""

    result: T
    replication: Replication
