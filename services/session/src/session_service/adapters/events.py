"""Publishes the session service's events to the users stream (one field `data`)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from shared.connections import RedisClient
from shared.events import SessionEvent
from shared.keys import Keys

logger = logging.getLogger(__name__)


class StreamPublisher:
    def __init__(self, redis: RedisClient, keys: Keys, maxlen: int) -> None:
        self._redis = redis
        self._stream = keys.user_events()
        self._maxlen = maxlen

    async def publish(self, event: SessionEvent) -> None:
        # Session events are notifications for audit and dashboards; the session change
        # they report is already done, so a failed XADD is logged, not turned into an
        # error for a caller whose session is fine.
        try:
            await self._redis.xadd(
                self._stream,
                event.fields(),  # type: ignore[arg-type]  # dict[str, bytes] is a valid field map; redis-py's stub is invariant
                maxlen=self._maxlen,
                approximate=True,
            )
        except (RedisError, OSError) as exc:
            logger.warning("could not publish %s %s: %s", event.type, event.id, exc)
