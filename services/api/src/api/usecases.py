"""Use cases for users: each write commits its row and its event together, then purges.

Reads go through `UserCache` and hand back the user's JSON bytes, so a cache hit is
answered without decoding and re-encoding the document.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.adapters.orm import UserRow, utcnow
from api.adapters.outbox import OutboxRelay, add_event
from api.adapters.repository import UserRepository, own_document, public_document, row_version
from api.adapters.user_cache import UserCache
from api.errors import EmailTakenError, UserNotFoundError
from api.metrics import ApiMetrics
from api.passwords import hash_password, password_matches
from api.schemas import UserCreate, UserUpdate
from shared.cache import Lookup, encode
from shared.events import (
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    UserEvent,
    UserPasswordChanged,
    UserPasswordChangedPayload,
    UserUpdated,
    UserUpdatedPayload,
)
from shared.tracing import Spans, current_traceparent

SOURCE = "api"
Document = dict[str, Any]
Change = Callable[["UserRepository"], Awaitable[tuple[UserRow, UserEvent]]]


class UserService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        cache: UserCache,
        relay: OutboxRelay,
        metrics: ApiMetrics,
        spans: Spans | None = None,
    ) -> None:
        self.db = db
        self.cache = cache
        self.relay = relay
        self.metrics = metrics
        self.spans = spans  # None: tracing off

    # -- reads ------------------------------------------------------------------------------

    async def load_user(self, user_id: uuid.UUID) -> Document | None:
        """The user's public view straight from the database (the cache's loader)."""
        self.metrics.db_loads.labels("user").inc()
        async with self.db() as session:
            row = await UserRepository(session).get(user_id)
            return None if row is None else public_document(row)

    async def own(self, user_id: uuid.UUID) -> bytes:
        """The account's own view (with its email), from the database: never cached, so
        the shared cache and every near cache only ever hold public views."""
        async with self.db() as session:
            row = await UserRepository(session).get(user_id)
        if row is None:
            raise UserNotFoundError(str(user_id))
        return encode(own_document(row))

    async def get(self, user_id: uuid.UUID) -> Lookup:
        """The user's JSON through the cache; `UserNotFoundError` when absent."""
        found = await self.cache.user(user_id, lambda: self.load_user(user_id))
        if found.data is None or found.data == b"null":
            raise UserNotFoundError(str(user_id))
        return found

    async def load_page(self, page: int, limit: int) -> Document:
        self.metrics.db_loads.labels("list").inc()
        async with self.db() as session:
            rows, total = await UserRepository(session).page(page, limit)
        items = [public_document(row) for row in rows]
        return {"items": items, "page": page, "limit": limit, "total": total}

    async def list(self, page: int, limit: int) -> Lookup:
        return await self.cache.page(page, limit, lambda: self.load_page(page, limit))

    async def authenticate(self, email: str, password: str) -> tuple[uuid.UUID, Document] | None:
        """The id and own view of the user these credentials belong to, else None.

        One answer (None) for an unknown email and a wrong password, in the same time.
        """
        async with self.db() as session:
            row = await UserRepository(session).by_email(email.strip().lower())
        if not await password_matches(None if row is None else row.password_hash, password):
            return None
        assert row is not None  # password_matches is False without a stored hash
        return row.id, own_document(row)

    # -- writes -----------------------------------------------------------------------------

    async def create(self, data: UserCreate) -> bytes:
        password_hash = await hash_password(data.password)
        email = data.email.lower()

        async def write(repo: UserRepository) -> tuple[UserRow, UserEvent]:
            if await repo.email_taken(email):
                raise EmailTakenError
            row = UserRow(id=uuid.uuid4(), email=email, name=data.name)
            row.password_hash = password_hash
            row.created_at = row.updated_at = utcnow()
            repo.add(row)
            payload = UserCreatedPayload(user_id=row.id, email=email, name=data.name)
            return row, UserCreated(source=SOURCE, payload=payload)

        row, event = await self._write(write)
        await self.cache.purge_user(None, event.id)
        return encode(own_document(row))

    async def update(
        self, user_id: uuid.UUID, data: UserUpdate, *, keep_session: str | None = None
    ) -> bytes:
        """Apply a PATCH; a password change's event names `keep_session` as the survivor."""
        password_hash = None if data.password is None else await hash_password(data.password)

        async def write(repo: UserRepository) -> tuple[UserRow, UserEvent]:
            row = await self._existing(repo, user_id)
            changed = await _apply(repo, row, data, password_hash)
            version = row_version(row.updated_at)
            if password_hash is not None:
                password_payload = UserPasswordChangedPayload(
                    user_id=row.id, keep_session=keep_session, version=version
                )
                return row, UserPasswordChanged(source=SOURCE, payload=password_payload)
            payload = UserUpdatedPayload(user_id=row.id, changed=tuple(changed), version=version)
            return row, UserUpdated(source=SOURCE, payload=payload)

        row, event = await self._write(write)
        # Write-through: the new public view replaces the cached one at once (readers hit,
        # never miss, right after a write); the invalidator's purge spares it (versions).
        await self.cache.write_user(
            row.id, public_document(row), row_version(row.updated_at), event.id
        )
        return encode(own_document(row))

    async def delete(self, user_id: uuid.UUID) -> None:
        async def write(repo: UserRepository) -> tuple[UserRow, UserEvent]:
            row = await self._existing(repo, user_id)
            await repo.delete(row)
            payload = UserDeletedPayload(user_id=row.id)
            return row, UserDeleted(source=SOURCE, payload=payload)

        _, event = await self._write(write)
        await self.cache.purge_user(user_id, event.id)

    async def _write(self, change: Change) -> tuple[UserRow, UserEvent]:
        """Run `change` and stage its event in one transaction; wake the relay after commit.

        Traced, the transaction is the `user write` span (its SQL statements below it), and
        the event carries that span's context when it is sampled: the relay and every consumer
        continue it.
        """
        if self.spans is None:
            return await self._transaction(change, None)
        with self.spans.current("user write") as span:
            # A sampled write's context only: nothing downstream records an unsampled one.
            traceparent = current_traceparent(sampled_only=True)
            row, event = await self._transaction(change, traceparent)
            span.set_attributes(
                {"messaging.message.id": str(event.id), "app.event.type": event.type}
            )
            return row, event

    async def _transaction(
        self, change: Change, traceparent: str | None
    ) -> tuple[UserRow, UserEvent]:
        try:
            async with self.db() as session, session.begin():
                row, event = await change(UserRepository(session))
                add_event(session, event, traceparent)
        except IntegrityError as exc:
            # Two writers raced past the email check: the unique index decides.
            if "email" in str(exc.orig).lower() or "unique" in str(exc.orig).lower():
                raise EmailTakenError from None
            raise
        self.relay.notify()
        return row, event

    @staticmethod
    async def _existing(repo: UserRepository, user_id: uuid.UUID) -> UserRow:
        row = await repo.get(user_id, for_update=True)
        if row is None:
            raise UserNotFoundError(str(user_id))
        return row


async def _apply(
    repo: UserRepository, row: UserRow, data: UserUpdate, password_hash: str | None
) -> list[str]:
    """Apply a PATCH to `row`; the names of the fields that changed."""
    changed: list[str] = []
    if data.email is not None and data.email.lower() != row.email:
        if await repo.email_taken(data.email.lower(), other_than=row.id):
            raise EmailTakenError
        row.email = data.email.lower()
        changed.append("email")
    if data.name is not None and data.name != row.name:
        row.name = data.name
        changed.append("name")
    if password_hash is not None:
        row.password_hash = password_hash
        changed.append("password")
    # Strictly later than the previous version, whatever this instance's clock says: the
    # row is locked (FOR UPDATE), so versions of one row never repeat or go back.
    row.updated_at = max(utcnow(), row.updated_at + timedelta(microseconds=1))
    return changed
