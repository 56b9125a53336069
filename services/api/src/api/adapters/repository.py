"""The users repository: every SQL statement the use cases need, on one session."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.adapters.orm import UserRow


def public_document(row: UserRow) -> dict[str, Any]:
    """What anyone may see of a user (and all the cache holds): no email, no password hash."""
    return {
        "id": str(row.id),
        "name": row.name,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def row_version(updated_at: datetime) -> int:
    """A row's version: its `updated_at` in µs since the epoch (strictly increasing per row:
    `usecases` moves it forward by at least 1 µs on every write)."""
    return round(updated_at.timestamp() * 1_000_000)


def document_version(document: dict[str, Any]) -> int:
    """The version of a public or own document (its `updated_at`)."""
    updated_at = document["updated_at"]
    assert isinstance(updated_at, datetime)
    return row_version(updated_at)


def own_document(row: UserRow) -> dict[str, Any]:
    """What the account itself sees: the public view plus its email. Never cached."""
    return {**public_document(row), "email": row.email}


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> UserRow | None:
        statement = select(UserRow).where(UserRow.id == user_id)
        if for_update:
            statement = statement.with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def by_email(self, email: str) -> UserRow | None:
        statement = select(UserRow).where(UserRow.email == email)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def email_taken(self, email: str, *, other_than: uuid.UUID | None = None) -> bool:
        statement = select(UserRow.id).where(UserRow.email == email)
        if other_than is not None:
            statement = statement.where(UserRow.id != other_than)
        return (await self.session.execute(statement.limit(1))).first() is not None

    async def page(self, page: int, limit: int) -> tuple[list[UserRow], int]:
        total = (await self.session.execute(select(func.count()).select_from(UserRow))).scalar_one()
        statement = (
            select(UserRow)
            .order_by(UserRow.created_at, UserRow.id)
            .offset((page - 1) * limit)
            .limit(limit)
        )
        rows = list((await self.session.execute(statement)).scalars())
        return rows, int(total)

    async def recent_ids(self, count: int) -> list[uuid.UUID]:
        statement = select(UserRow.id).order_by(UserRow.created_at.desc()).limit(count)
        return list((await self.session.execute(statement)).scalars())

    def add(self, row: UserRow) -> None:
        self.session.add(row)

    async def delete(self, row: UserRow) -> None:
        await self.session.delete(row)
