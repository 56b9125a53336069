"""The Redis session store: the only code that writes session keys.

Every write is one Lua script (see `scripts`) on the slot of the session's owner; a lookup is
one `GET`. Writes that issue or remove sessions (create, rotate, destroy, revoke-all) count
once a replica holds them, or once `SESSION_REPLICA_WAIT` has passed (`shared.replication`);
what was known is handed back for the metrics. Redis failures become
`SessionStoreUnavailable`, which the HTTP layer answers with 503: sessions fail closed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from redis.commands.core import AsyncScript

from session_service.adapters import scripts
from session_service.domain import (
    Created,
    IssuedSession,
    Rotated,
    SessionRecord,
    Written,
    encode_data,
)
from session_service.errors import SessionNotFoundError, SessionStoreUnavailable
from shared import keys as key_names
from shared.connections import UNAVAILABLE_ERRORS, RedisClient
from shared.keys import Keys
from shared.replication import Replication, ReplicaWait
from shared.sessionids import SessionRef, new_session_id, session_hash, session_ref

# A script that walks a user's index is called again with the records it named but was not
# given (scripts' docstring); each call declares every hash seen so far. Only writes for that
# one user in between make a third call needed, and the fourth is not strict.
_DECLARE_ATTEMPTS: Final = 4
_RACE_PAUSE: Final = 0.002  # seconds, times the attempt: the most a raced call pauses
_ANY_HASH: Final = "0" * 64


@asynccontextmanager
async def _unavailable_as_503() -> AsyncIterator[None]:
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise SessionStoreUnavailable(type(exc).__name__) from exc


class RedisSessionStore:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        idle_ms: int,
        absolute_ms: int,
        max_per_user: int,
        replica_wait_ms: int = 0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._idle_ms = idle_ms
        self._absolute_ms = absolute_ms
        self._max_per_user = max_per_user
        self._replicas = ReplicaWait(redis, replica_wait_ms)
        self._create = redis.register_script(scripts.CREATE)
        self._refresh = redis.register_script(scripts.REFRESH)
        self._rotate = redis.register_script(scripts.ROTATE)
        self._destroy = redis.register_script(scripts.DESTROY)
        self._list = redis.register_script(scripts.LIST)
        self._revoke_all = redis.register_script(scripts.REVOKE_ALL)

    async def create(self, user_id: str, data: dict[str, Any]) -> Created:
        uid = key_names.user_id(user_id)
        session_id = new_session_id(uid)
        digest = session_hash(session_id)
        fixed = [self._keys.user_sessions(uid), self._keys.session(uid, digest)]
        args = [uid, encode_data(data), self._idle_ms, self._absolute_ms, self._max_per_user]
        reply, replication = await self._walk(self._create, uid, fixed, [*args, digest], wait=True)
        record = SessionRecord.from_json(digest, reply[0])
        evicted = tuple(h.decode() for h in reply[1:])
        return Created(IssuedSession(session_id, record), evicted, replication)

    async def get(self, session_id: str) -> SessionRecord:
        ref = self._ref(session_id)
        async with _unavailable_as_503():
            raw = await self._redis.get(self._keys.session(ref.user_id, ref.digest))
        if raw is None:
            raise SessionNotFoundError
        return SessionRecord.from_json(ref.digest, raw)

    async def refresh(self, session_id: str) -> SessionRecord:
        ref = self._ref(session_id)
        async with _unavailable_as_503():
            raw = await self._refresh(keys=self._own(ref), args=[ref.digest, self._idle_ms])
        if raw is None:
            raise SessionNotFoundError
        return SessionRecord.from_json(ref.digest, raw)

    async def rotate(self, session_id: str) -> Rotated:
        old = self._ref(session_id)
        new_id = new_session_id(old.user_id)
        new = session_hash(new_id)
        keys = [*self._own(old), self._keys.session(old.user_id, new)]
        async with _unavailable_as_503():
            acked = await self._replicas.run(self._rotate, keys, [old.digest, new, self._idle_ms])
        if acked.reply is None:
            raise SessionNotFoundError
        issued = IssuedSession(new_id, SessionRecord.from_json(new, acked.reply))
        return Rotated(issued, old.digest, acked.replication)

    async def destroy(self, session_id: str) -> Written[tuple[str, str] | None]:
        """(user id, hash) of the session destroyed, or None when there was none."""
        ref = session_ref(session_id)
        if ref is None:
            return Written(None, Replication.OFF)
        async with _unavailable_as_503():
            acked = await self._replicas.run(self._destroy, self._own(ref), [ref.digest])
        owner = None if acked.reply is None else (acked.reply.decode(), ref.digest)
        return Written(owner, acked.replication)

    async def list_for_user(self, user_id: str) -> list[SessionRecord]:
        uid = key_names.user_id(user_id)
        flat, _ = await self._walk(self._list, uid, [self._keys.user_sessions(uid)], [])
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [SessionRecord.from_json(h.decode(), raw) for h, raw in pairs]

    async def revoke_all(
        self, user_id: str, *, keep: str | None = None, created_before_ms: int | None = None
    ) -> Written[list[str]]:
        """Hashes of the sessions revoked; `keep` survives, as do any created after the cut."""
        uid = key_names.user_id(user_id)
        cutoff = -1 if created_before_ms is None else created_before_ms
        args: list[str | int] = [keep or "", cutoff]
        index = [self._keys.user_sessions(uid)]
        revoked, replication = await self._walk(self._revoke_all, uid, index, args, wait=True)
        return Written([h.decode() for h in revoked], replication)

    async def count_active(self, batch: int = 1000) -> int:
        """Session records in Redis, by a SCAN over their pattern (every primary of a
        cluster): for the sampled gauge."""
        count = 0
        async with _unavailable_as_503():
            async for _ in self._redis.scan_iter(match=self._keys.session_pattern(), count=batch):
                count += 1
        return count

    async def _walk(
        self,
        script: AsyncScript,
        uid: str,
        fixed: list[str],
        args: Sequence[Any],
        *,
        wait: bool = False,
    ) -> tuple[list[Any], Replication]:
        """Call a script that walks `uid`'s index, declaring the records it names (scripts'
        docstring), until it answers `ok`; its last call may touch records undeclared."""
        hashes: set[str] = set()
        head = self._keys.session(uid, _ANY_HASH).removesuffix(_ANY_HASH)
        async with _unavailable_as_503():
            for attempt in range(_DECLARE_ATTEMPTS):
                if attempt > 1:  # raced by writers of the same user: let them pass, jittered
                    await asyncio.sleep(random.uniform(0, _RACE_PAUSE * attempt))
                strict = "0" if attempt == _DECLARE_ATTEMPTS - 1 else "1"
                keys = [*fixed, *(self._keys.session(uid, h) for h in sorted(hashes))]
                call_args = [*args, head, strict]
                if wait:
                    acked = await self._replicas.run(script, keys, call_args)
                    reply, replication = acked.reply, acked.replication
                else:
                    reply, replication = await script(keys=keys, args=call_args), Replication.OFF
                status, *rest = reply
                if status == scripts.OK:
                    return rest, replication
                hashes.update(h.decode() for h in rest)
        raise AssertionError("a script not strict never answers 'missing'")

    def _own(self, ref: SessionRef) -> list[str]:
        """The keys of a session's own scripts: its owner's index, then its record."""
        return [self._keys.user_sessions(ref.user_id), self._keys.session(ref.user_id, ref.digest)]

    @staticmethod
    def _ref(session_id: str) -> SessionRef:
        # A malformed id cannot be one of ours: 404 without a round trip.
        ref = session_ref(session_id)
        if ref is None:
            raise SessionNotFoundError
        return ref
