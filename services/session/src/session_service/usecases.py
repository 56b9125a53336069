"""Use cases: each session operation, its event and its metric, over the store port."""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol
from uuid import UUID

from session_service.domain import Created, IssuedSession, Rotated, SessionRecord, Written, from_ms
from session_service.metrics import SessionMetrics
from shared.events import (
    SessionCreated,
    SessionCreatedPayload,
    SessionDestroyed,
    SessionDestroyedPayload,
    SessionEvent,
    SessionRevokedAll,
    SessionRevokedAllPayload,
)
from shared.replication import Replication

logger = logging.getLogger(__name__)
SOURCE = "session"
DestroyReason = Literal["logout", "rotated", "expired", "evicted"]
Write = Literal["create", "rotate", "destroy", "revoke"]


class SessionStore(Protocol):
    """Where sessions live; `RedisSessionStore` is the one real implementation."""

    async def create(self, user_id: str, data: dict[str, Any]) -> Created: ...
    async def get(self, session_id: str) -> SessionRecord: ...
    async def refresh(self, session_id: str) -> SessionRecord: ...
    async def rotate(self, session_id: str) -> Rotated: ...
    async def destroy(self, session_id: str) -> Written[tuple[str, str] | None]: ...
    async def list_for_user(self, user_id: str) -> list[SessionRecord]: ...
    async def revoke_all(
        self, user_id: str, *, keep: str | None = None, created_before_ms: int | None = None
    ) -> Written[list[str]]: ...
    async def count_active(self) -> int: ...


class EventPublisher(Protocol):
    """Appends one event to the users stream."""

    async def publish(self, event: SessionEvent) -> None: ...


class Sessions:
    def __init__(
        self, store: SessionStore, publisher: EventPublisher, metrics: SessionMetrics
    ) -> None:
        self.store = store
        self._publisher = publisher
        self._metrics = metrics

    async def create(self, user_id: UUID, data: dict[str, Any]) -> IssuedSession:
        created = await self.store.create(str(user_id), data)
        record = created.issued.record
        self._metrics.created.inc()
        self._replicated("create", created.replication)
        await self._publisher.publish(
            SessionCreated(
                source=SOURCE,
                payload=SessionCreatedPayload(
                    user_id=user_id,
                    session_hash=record.session_hash,
                    expires_at=from_ms(record.expires_at),
                    absolute_expires_at=from_ms(record.absolute_expires_at),
                ),
            )
        )
        for evicted in created.evicted:
            await self._destroyed(user_id, evicted, "evicted")
        logger.info("session %s created", record.session_hash[:12])
        return created.issued

    async def get(self, session_id: str) -> SessionRecord:
        return await self.store.get(session_id)

    async def refresh(self, session_id: str) -> SessionRecord:
        record = await self.store.refresh(session_id)
        self._metrics.refreshed.inc()
        return record

    async def rotate(self, session_id: str) -> IssuedSession:
        rotated = await self.store.rotate(session_id)
        issued = rotated.issued
        self._metrics.rotated.inc()
        self._replicated("rotate", rotated.replication)
        user_id = UUID(issued.record.user_id)
        await self._destroyed(user_id, rotated.old_hash, "rotated")
        await self._publisher.publish(
            SessionCreated(
                source=SOURCE,
                payload=SessionCreatedPayload(
                    user_id=user_id,
                    session_hash=issued.record.session_hash,
                    expires_at=from_ms(issued.record.expires_at),
                    absolute_expires_at=from_ms(issued.record.absolute_expires_at),
                ),
            )
        )
        return issued

    async def destroy(self, session_id: str) -> None:
        destroyed = await self.store.destroy(session_id)
        if destroyed.result is not None:
            self._replicated("destroy", destroyed.replication)
            owner, digest = destroyed.result
            await self._destroyed(UUID(owner), digest, "logout")

    async def list_for_user(self, user_id: UUID) -> list[SessionRecord]:
        return await self.store.list_for_user(str(user_id))

    async def revoke_all(
        self,
        user_id: UUID,
        *,
        reason: str = "requested",
        keep: str | None = None,
        created_before_ms: int | None = None,
    ) -> int:
        written = await self.store.revoke_all(
            str(user_id), keep=keep, created_before_ms=created_before_ms
        )
        revoked = written.result
        self._metrics.revoked.labels(reason).inc(len(revoked))
        if revoked:
            self._replicated("revoke", written.replication)
            payload = SessionRevokedAllPayload(user_id=user_id, revoked=len(revoked), reason=reason)
            await self._publisher.publish(SessionRevokedAll(source=SOURCE, payload=payload))
            logger.info("revoked %d sessions of user %s (%s)", len(revoked), user_id, reason)
        return len(revoked)

    def _replicated(self, write: Write, replication: Replication) -> None:
        # Acknowledged either way: a write no replica confirmed is counted, and
        # `shared.replication` logs the primary's state
        # (docs/decisions/0033-session-writes-wait-for-a-replica.md).
        if replication is not Replication.OFF:
            self._metrics.replica_acks.labels(write, replication.value).inc()

    async def _destroyed(self, user_id: UUID, digest: str, reason: DestroyReason) -> None:
        self._metrics.destroyed.labels(reason).inc()
        payload = SessionDestroyedPayload(user_id=user_id, session_hash=digest, reason=reason)
        await self._publisher.publish(SessionDestroyed(source=SOURCE, payload=payload))
