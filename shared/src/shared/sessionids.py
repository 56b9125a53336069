"""Session ids: how one is made, what shape it has, and its hash — one rule for every service.

An id is 256 bits from `secrets`, shown to the client once (the cookie). Redis and the
events only ever see its SHA-256 hex digest, so a dump of Redis yields no id that would pass
a lookup. Anything not shaped like an id is no session: answered without a lookup, and never
placed in a URL path or a key (`fullmatch`, so no trailing newline slips through).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final

ID_BYTES: Final = 32  # 256 bits: OWASP asks for at least 64 bits of entropy
# token_urlsafe(32) gives 43 characters; a little more is accepted so a longer id could come.
_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{43,128}")


def new_session_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def well_formed(session_id: str) -> bool:
    """Whether `session_id` could be one of ours."""
    return _SHAPE.fullmatch(session_id) is not None


def session_hash(session_id: str) -> str:
    """The SHA-256 hex digest by which Redis keys and events name a session."""
    return hashlib.sha256(session_id.encode()).hexdigest()
