"""Group `session` on the users stream: a user deleted, or a password changed, ends sessions.

Built on the stream toolkit (`shared.streams`: group at id 0, reclaim, dead letters); this
module is only the effect. Every effect is idempotent:

- `user.deleted` revokes every session of the user; doing it twice revokes nothing more.
- `user.password_changed` revokes the sessions created up to the change (plus a clock
  margin), except `keep_session` and the session rotated from it. A redelivery — or a replay
  from the dead letters days later — therefore never logs out a sign-in made with the new
  password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Final, Protocol
from uuid import UUID

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from session_service.config import SessionSettings
from session_service.errors import SessionStoreUnavailable
from session_service.usecases import Sessions
from shared.events import UserDeleted, UserPasswordChanged
from shared.keys import SESSION_GROUP
from shared.streams import (
    Delivery,
    StreamConsumer,
    StreamMetrics,
    build_consumer,
    build_housekeeper,
)

logger = logging.getLogger(__name__)
# Shutdown must finish: a background task gets this long to honour its cancellation.
STOP_TIMEOUT: Final = 5.0

# The change's time is the api's clock, a session's creation time Redis's clock: a margin
# makes a skew between them err towards revoking (a sign-in in the second after a password
# change may be asked to sign in again) rather than towards keeping a pre-change session.
CLOCK_MARGIN_MS: Final = 1000


class Revoking(Protocol):
    """The one use case the consumer needs (`Sessions.revoke_all`)."""

    async def revoke_all(
        self,
        user_id: UUID,
        *,
        reason: str = ...,
        keep: str | None = None,
        created_before_ms: int | None = None,
    ) -> int: ...


class Revoker:
    """The batch handler the toolkit calls."""

    def __init__(self, sessions: Revoking) -> None:
        self._sessions = sessions

    async def __call__(self, batch: Sequence[Delivery], /) -> Mapping[str, BaseException]:
        failures: dict[str, BaseException] = {}
        for delivery in batch:
            try:
                await self._apply(delivery)
            except SessionStoreUnavailable as exc:
                # The toolkit keeps entries that failed for want of Redis pending (never
                # dead-lettered): hand it the connection error itself so it knows.
                failures[delivery.entry_id] = exc.__cause__ or exc
        return failures

    async def _apply(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, UserDeleted):
            await self._sessions.revoke_all(event.payload.user_id, reason="user.deleted")
        elif isinstance(event, UserPasswordChanged):
            cutoff = int(event.occurred_at.timestamp() * 1000) + CLOCK_MARGIN_MS
            await self._sessions.revoke_all(
                event.payload.user_id,
                reason="user.password_changed",
                keep=event.payload.keep_session,
                created_before_ms=cutoff,
            )
        # Every other type (user.created/updated, session.*) needs nothing from us: acked.


async def _shut_down(consumer: StreamConsumer, tasks: list[asyncio.Task[None]]) -> None:
    """Stop the consumer (it finishes its batch), then cancel what is left."""
    consumer.stop()  # stop, not cancel: see StreamConsumer.stop
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT
    pending = set(tasks)
    tasks[1].cancel()  # housekeeping holds nothing that must finish
    while pending and loop.time() < deadline:
        _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in pending - {tasks[0]}:
            # Again: a cancel landing inside a redis-py call can be lost on Python 3.11.
            task.cancel()
    for task in pending:
        logger.error("task %s did not stop in %.0fs; cancelling it", task.get_name(), STOP_TIMEOUT)
        task.cancel()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("task %s died", task.get_name(), exc_info=task.exception())


def start_consumer(
    stack: AsyncExitStack,
    redis: Redis,
    settings: SessionSettings,
    sessions: Sessions,
    registry: CollectorRegistry,
) -> None:
    """Run group `session` and its housekeeping until `stack` closes.

    The toolkit creates the group at id 0 (retrying while Redis is away) before it reads,
    so events published before the service first started are not skipped.
    """
    stream_metrics = StreamMetrics.create(registry)
    consumer = build_consumer(
        redis, settings, SESSION_GROUP, Revoker(sessions), metrics=stream_metrics
    )
    housekeeper = build_housekeeper(redis, settings, consumer, stream_metrics)
    tasks = [
        asyncio.create_task(consumer.run(), name="session-consumer"),
        asyncio.create_task(housekeeper.run(), name="session-housekeeping"),
    ]
    for task in tasks:
        task.add_done_callback(_log_crash)
    stack.push_async_callback(_shut_down, consumer, tasks)
    logger.info("consuming user events in group %s as %s", SESSION_GROUP, consumer.config.consumer)
