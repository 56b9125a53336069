"""Helpers for stream tests: plain XADD (as a third-party publisher), conditions to poll with
`devtools.polling.eventually`, a recording handler, and a consumer run for the length of a
`with` block."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from shared.events import (
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    UserPasswordChanged,
    UserPasswordChangedPayload,
    UserUpdated,
    UserUpdatedPayload,
)
from shared.streams import Delivery, StreamConsumer

UserEventModel = UserCreated | UserUpdated | UserDeleted | UserPasswordChanged


def user_event(kind: str, uid: uuid.UUID | None = None) -> UserEventModel:
    uid = uid or uuid.uuid4()
    if kind == "user.created":
        return UserCreated(
            source="test", payload=UserCreatedPayload(user_id=uid, email="a@example.com", name="A")
        )
    if kind == "user.updated":
        return UserUpdated(source="test", payload=UserUpdatedPayload(user_id=uid))
    if kind == "user.deleted":
        return UserDeleted(source="test", payload=UserDeletedPayload(user_id=uid))
    return UserPasswordChanged(source="test", payload=UserPasswordChangedPayload(user_id=uid))


async def publish(redis: Redis, stream: str, event: UserEventModel) -> str:
    entry_id = await redis.xadd(stream, {"data": event.to_json()})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def publish_raw(redis: Redis, stream: str, fields: dict[str, Any]) -> str:
    encoded: dict[Any, Any] = {
        k: orjson.dumps(v) if isinstance(v, dict) else v for k, v in fields.items()
    }
    entry_id = await redis.xadd(stream, encoded)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample by its exposed name (a counter's ends in `_total`); 0 when the series does not
    exist yet, as a counter nobody incremented reads."""
    return registry.get_sample_value(name, labels) or 0.0


async def equals(value: Awaitable[Any], expected: object) -> bool:
    return bool(await value == expected)


async def pending_count(redis: Redis, stream: str, group: str) -> int:
    summary = await redis.xpending(stream, group)
    return int(summary["pending"])


class Recorder:
    """A batch handler that records what it handled and fails for chosen user ids."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.poison: set[uuid.UUID] = set()
        self.calls = 0

    async def __call__(self, batch: Sequence[Delivery]) -> Mapping[str, BaseException]:
        self.calls += 1
        failures: dict[str, BaseException] = {}
        for delivery in batch:
            user = delivery.event.payload.user_id
            if user in self.poison:
                failures[delivery.entry_id] = RuntimeError(f"cannot handle {user}")
            else:
                self.handled.append(str(delivery.event.id))
        return failures


@asynccontextmanager
async def running(consumer: StreamConsumer) -> AsyncIterator[StreamConsumer]:
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 10)
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)


async def caught_up(redis: Redis, stream: str, group: str) -> bool:
    """The group has been handed the stream's last entry and has nothing pending."""
    groups: Any = await redis.xinfo_groups(stream)
    info = next((g for g in groups if g["name"] == group.encode()), None)
    last: Any = await redis.xrevrange(stream, count=1)
    if info is None or not last:
        return False
    return bool(info["pending"] == 0 and info["last-delivered-id"] == last[0][0])
