"""The Redis session store: the only code that writes session keys.

Every write is one Lua script (see `scripts`); a lookup is one `GET`. Redis failures
become `SessionStoreUnavailable`, which the HTTP layer answers with 503: sessions fail
closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from session_service.adapters import scripts
from session_service.domain import (
    Created,
    IssuedSession,
    SessionRecord,
    encode_data,
)
from session_service.errors import SessionNotFoundError, SessionStoreUnavailable
from shared import keys as key_names
from shared.connections import UNAVAILABLE_ERRORS, RedisClient
from shared.keys import Keys
from shared.sessionids import new_session_id, well_formed
from shared.sessionids import session_hash as hash_session_id

_ZERO_HASH: Final = "0" * 64
_ZERO_UUID: Final = "00000000-0000-0000-0000-000000000000"


def _split(template: str, placeholder: str) -> tuple[str, str]:
    head, _, tail = template.partition(placeholder)
    return head, tail


@asynccontextmanager
async def _unavailable_as_503() -> AsyncIterator[None]:
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise SessionStoreUnavailable(type(exc).__name__) from exc


class RedisSessionStore:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, idle_ms: int, absolute_ms: int, max_per_user: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._idle_ms = idle_ms
        self._absolute_ms = absolute_ms
        self._max_per_user = max_per_user
        # The scripts build keys from these templates, so every name still comes from keys.py.
        self._s_head, self._s_tail = _split(keys.session(_ZERO_HASH), _ZERO_HASH)
        self._i_head, self._i_tail = _split(keys.user_sessions(_ZERO_UUID), _ZERO_UUID)
        self._create = redis.register_script(scripts.CREATE)
        self._refresh = redis.register_script(scripts.REFRESH)
        self._rotate = redis.register_script(scripts.ROTATE)
        self._destroy = redis.register_script(scripts.DESTROY)
        self._list = redis.register_script(scripts.LIST)
        self._revoke_all = redis.register_script(scripts.REVOKE_ALL)

    async def create(self, user_id: str, data: dict[str, Any]) -> Created:
        uid = key_names.user_id(user_id)
        session_id = new_session_id()
        digest = hash_session_id(session_id)
        args: list[bytes | str | int] = [
            uid, encode_data(data), self._idle_ms, self._absolute_ms, self._max_per_user,
            digest, self._s_head, self._s_tail,
        ]  # fmt: skip
        async with _unavailable_as_503():
            raw, evicted = await self._create(
                keys=[self._keys.session(digest), self._keys.user_sessions(uid)], args=args
            )
        record = SessionRecord.from_json(digest, raw)
        return Created(IssuedSession(session_id, record), tuple(h.decode() for h in evicted))

    async def get(self, session_id: str) -> SessionRecord:
        digest = self._digest(session_id)
        async with _unavailable_as_503():
            raw = await self._redis.get(self._keys.session(digest))
        if raw is None:
            raise SessionNotFoundError
        return SessionRecord.from_json(digest, raw)

    async def refresh(self, session_id: str) -> SessionRecord:
        digest = self._digest(session_id)
        async with _unavailable_as_503():
            raw = await self._refresh(
                keys=[self._keys.session(digest)],
                args=[digest, self._idle_ms, self._i_head, self._i_tail],
            )
        if raw is None:
            raise SessionNotFoundError
        return SessionRecord.from_json(digest, raw)

    async def rotate(self, session_id: str) -> tuple[IssuedSession, str]:
        """The new session and the old one's hash."""
        old = self._digest(session_id)
        new_id = new_session_id()
        new = hash_session_id(new_id)
        async with _unavailable_as_503():
            raw = await self._rotate(
                keys=[self._keys.session(old), self._keys.session(new)],
                args=[old, new, self._idle_ms, self._i_head, self._i_tail],
            )
        if raw is None:
            raise SessionNotFoundError
        return IssuedSession(new_id, SessionRecord.from_json(new, raw)), old

    async def destroy(self, session_id: str) -> tuple[str, str] | None:
        """(user id, hash) of the session destroyed, or None when there was none."""
        if not well_formed(session_id):
            return None
        digest = hash_session_id(session_id)
        async with _unavailable_as_503():
            owner = await self._destroy(
                keys=[self._keys.session(digest)], args=[digest, self._i_head, self._i_tail]
            )
        return None if owner is None else (owner.decode(), digest)

    async def list_for_user(self, user_id: str) -> list[SessionRecord]:
        index = self._keys.user_sessions(user_id)
        async with _unavailable_as_503():
            flat = await self._list(keys=[index], args=[self._s_head, self._s_tail])
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [SessionRecord.from_json(h.decode(), raw) for h, raw in pairs]

    async def revoke_all(
        self, user_id: str, *, keep: str | None = None, created_before_ms: int | None = None
    ) -> list[str]:
        """Hashes of the sessions revoked; `keep` survives, as do any created after the cut."""
        index = self._keys.user_sessions(user_id)
        cutoff = -1 if created_before_ms is None else created_before_ms
        async with _unavailable_as_503():
            revoked = await self._revoke_all(
                keys=[index], args=[self._s_head, self._s_tail, keep or "", cutoff]
            )
        return [h.decode() for h in revoked]

    async def count_active(self, batch: int = 1000) -> int:
        """Session records in Redis, by a SCAN over their pattern: for the sampled gauge."""
        count = 0
        async with _unavailable_as_503():
            async for _ in self._redis.scan_iter(match=self._keys.session_pattern(), count=batch):
                count += 1
        return count

    def _digest(self, session_id: str) -> str:
        # A malformed id cannot be one of ours: 404 without a round trip.
        if not well_formed(session_id):
            raise SessionNotFoundError
        return hash_session_id(session_id)
