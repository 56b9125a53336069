"""Password hashing with argon2id, off the event loop (it is CPU-bound by design)."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2-cffi's defaults are RFC 9106's low-memory profile: a sound default for a web login.
_HASHER = PasswordHasher()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches; never raises for a wrong password or a bad hash."""
    try:
        return await asyncio.to_thread(_HASHER.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    # Same parameters as real hashes: verifying against it costs what a real check costs,
    # so an unknown email cannot be told from a wrong password by timing.
    return _HASHER.hash(secrets.token_urlsafe(32))


async def password_matches(password_hash: str | None, password: str) -> bool:
    """Verify against the stored hash, or against a dummy one when there is no such user."""
    dummy = await asyncio.to_thread(_dummy_hash)  # computed once, before any timing matters
    matches = await verify_password(password_hash or dummy, password)
    return matches and password_hash is not None
