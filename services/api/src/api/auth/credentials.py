"""Password checks that take the same time whether or not the email exists."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.adapters.orm import UserRow
from api.passwords import verify_password


@functools.cache
def _dummy_hash() -> str:
    # Same (default) parameters as api.passwords: verifying against it costs what a real
    # check costs, so an unknown email cannot be told from a wrong password by timing.
    return PasswordHasher().hash(secrets.token_urlsafe(32))


async def authenticate(
    sessions: async_sessionmaker[AsyncSession], email: str, password: str
) -> UserRow | None:
    """The user whose email and password these are, else None (never says which was wrong)."""
    dummy = await asyncio.to_thread(_dummy_hash)  # computed once, before any timing matters
    async with sessions() as session:
        statement = select(UserRow).where(UserRow.email == email.strip().lower())
        row = (await session.execute(statement)).scalar_one_or_none()
    matches = await verify_password(row.password_hash if row is not None else dummy, password)
    return row if matches and row is not None else None
