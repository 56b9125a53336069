"""Session ids: how one is made, what shape it has, its hash and its owner — one rule for
every service.

An id is its owner's user id (32 lowercase hex digits, the UUID without hyphens) followed by
256 bits from `secrets` (43 url-safe base64 characters): 75 characters, shown to the client
once (the cookie). The owner part is the Redis Cluster hash tag of every key of the session,
so the record and the user's index share one slot and a lookup by id is still one `GET` on
the right node. Redis and the events only ever see the SHA-256 hex digest of the whole id,
never its random part, so a dump of Redis yields no id that would pass a lookup.

Anything not shaped like an id is no session: answered without a lookup, and never placed in
a URL path or a key (`fullmatch`, so no trailing newline slips through). Ids of the earlier
shape (43 random characters, no owner) are not well formed: they are no session.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Final
from uuid import UUID

ID_BYTES: Final = 32  # 256 random bits: OWASP asks for at least 64 bits of entropy
OWNER_LENGTH: Final = 32  # the owner's UUID as hex digits
RANDOM_LENGTH: Final = 43  # token_urlsafe(32)
ID_LENGTH: Final = OWNER_LENGTH + RANDOM_LENGTH
_SHAPE: Final = re.compile(r"(?P<owner>[0-9a-f]{32})[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class SessionRef:
    """What an id names in Redis: its owner (canonical UUID text, the keys' hash tag) and
    the SHA-256 hex digest of the whole id."""

    user_id: str
    digest: str


def new_session_id(user_id: str | UUID) -> str:
    """A fresh id for a session of `user_id` (a UUID or its text)."""
    owner = user_id if isinstance(user_id, UUID) else UUID(user_id)
    return owner.hex + secrets.token_urlsafe(ID_BYTES)


def well_formed(session_id: str) -> bool:
    """Whether `session_id` could be one of ours."""
    return _SHAPE.fullmatch(session_id) is not None


def session_hash(session_id: str) -> str:
    """The SHA-256 hex digest by which Redis keys and events name a session."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def session_ref(session_id: str) -> SessionRef | None:
    """Owner and digest of a well-formed id; None for anything else (no lookup needed)."""
    shape = _SHAPE.fullmatch(session_id)
    if shape is None:
        return None
    return SessionRef(str(UUID(shape["owner"])), session_hash(session_id))
