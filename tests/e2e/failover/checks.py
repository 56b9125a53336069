"""What must hold once a failover has settled, read from PostgreSQL and Redis directly.

Each check returns what is wrong (empty when all is well), so a test can await it with
`eventually` and show the last answer when it never settles.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from api.adapters.repository import row_version
from shared.connections import RedisClient
from shared.events import DATA_FIELD
from shared.keys import INVALIDATOR_GROUP, SESSION_GROUP, Keys
from shared.settings import normalise_database_url

GROUPS: Final = (INVALIDATOR_GROUP, SESSION_GROUP)
_VERSIONED: Final = re.compile(rb"^\x01v(\d+)\x01")
_PAGE: Final = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(mapping: dict[Any, Any], name: str) -> Any:
    """A field of a redis-py reply, whether the client decodes keys or not."""
    return mapping.get(name, mapping.get(name.encode()))


@dataclass(frozen=True, slots=True)
class Row:
    version: int  # updated_at in µs, as the cache's versions
    name: str


@dataclass(frozen=True, slots=True)
class Database:
    url: str

    @asynccontextmanager
    async def _rows(self, query: str) -> AsyncIterator[list[Any]]:
        engine = create_async_engine(normalise_database_url(self.url))
        try:
            async with engine.connect() as conn:
                yield list((await conn.execute(text(query))).all())
        finally:
            await engine.dispose()

    async def outbox(self) -> dict[str, bool]:
        """Every outbox row's id (the envelope's id) and whether it was published."""
        async with self._rows("SELECT id, published_at FROM outbox") as rows:
            return {str(row[0]): row[1] is not None for row in rows}

    async def users(self) -> dict[str, Row]:
        async with self._rows("SELECT id, updated_at, name FROM users") as rows:
            return {str(row[0]): Row(row_version(_aware(row[1])), row[2]) for row in rows}


def _aware(value: Any) -> datetime:
    # SQLite hands back naive datetimes of UTC (as text); PostgreSQL aware ones.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def stream_event_ids(redis: RedisClient, stream: str) -> list[str]:
    """The envelope id of every entry of the stream, in order (duplicates kept)."""
    found: list[str] = []
    start = "-"
    for _ in range(10_000):  # bounded: far more pages than a test writes
        entries: Any = await redis.xrange(stream, min=start, max="+", count=_PAGE)
        for _, fields in entries:
            found.append(str(orjson.loads(_field(fields, DATA_FIELD))["id"]))
        if len(entries) < _PAGE:
            break
        start = f"({_text(entries[-1][0])}"
    return found


async def unpublished(db: Database, redis: RedisClient, stream: str) -> list[str]:
    """Outbox rows not yet marked published, or marked but absent from the stream."""
    rows = await db.outbox()
    in_stream = set(await stream_event_ids(redis, stream))
    return [f"{row}: no published_at" for row, done in rows.items() if not done] + [
        f"{row}: not in the stream" for row in rows if row not in in_stream
    ]


async def groups_behind(redis: RedisClient, stream: str) -> list[str]:
    """Each group that has not read every entry or has entries pending."""
    info: Any = await redis.xinfo_stream(stream)
    last = _text(_field(info, "last-generated-id"))
    groups: Any = await redis.xinfo_groups(stream)
    by_name = {_text(_field(g, "name")): g for g in groups}
    behind = []
    for name in GROUPS:
        group = by_name.get(name)
        if group is None:
            behind.append(f"{name}: no such group")
            continue
        pending: Any = await redis.xpending(stream, name)
        delivered = _text(_field(group, "last-delivered-id"))
        lag = _field(group, "lag")
        if int(_field(pending, "pending")) != 0 or delivered != last or lag not in (0, None):
            behind.append(
                f"{name}: pending {_field(pending, 'pending')}, last delivered {delivered} "
                f"of {last}, lag {lag}"
            )
    return behind


async def stale_cache(db: Database, redis: RedisClient, keys: Keys) -> list[str]:
    """Users whose cached value is older than their row (or carries no version)."""
    stale = []
    for user, row in (await db.users()).items():
        cached: Any = await redis.get(keys.user(user))
        if cached is None:
            continue
        found = _VERSIONED.match(cached)
        if found is None:
            stale.append(f"{user}: cached without a version: {cached[:60]!r}")
            continue
        version = int(found[1])
        if version < row.version:
            stale.append(f"{user}: cached v{version} < row v{row.version}")
        elif version == row.version:
            name = orjson.loads(cached[found.end() :])["name"]
            if name != row.name:
                stale.append(f"{user}: v{version} cached as {name!r}, row says {row.name!r}")
    return stale


async def lost_sessions(api: str, sessions: list[tuple[str, str]]) -> list[str]:
    """The (user, cookie) pairs whose session no longer signs its user in on the api."""
    lost = []
    async with httpx.AsyncClient(base_url=api, timeout=10.0) as http:
        for user, cookie in sessions:
            response = await http.get("/v1/users/me", headers={"Cookie": f"session={cookie}"})
            http.cookies.clear()
            if response.status_code != 200 or response.json()["id"] != user:
                lost.append(f"{user}: {response.status_code} {response.text[:80]}")
    return lost
