"""Warm-up: pre-load hot users into the cache at start (CACHE_WARMUP_IDS / _RECENT).

Runs in the background so start-up never waits on it. Several instances starting together
would each load the same rows: a lock (`shared.lock`, tried once) lets one of them warm and
the others skip. The lock waits for a replica like the outbox relay's writes (the relay's
`ReplicaWait`, `OUTBOX_REPLICA_WAIT`), so a failover during the warm-up does not let a second
instance in at once; when no replica confirms in time the warm-up is skipped like a taken
lock. A Redis or database failure only means a colder cache: logged, not raised.
"""

from __future__ import annotations

import logging
import uuid
from functools import partial
from typing import Final

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from api.adapters.repository import UserRepository
from api.config import ApiSettings
from api.usecases import UserService
from shared.connections import RedisClient
from shared.errors import LockError
from shared.keys import Keys
from shared.lock import lock
from shared.replication import ReplicaWait

logger = logging.getLogger(__name__)

LOCK_RESOURCE: Final = "cache-warmup"
# Long enough for a few thousand loads; renewed while warming anyway.
_LOCK_TTL: Final = 30.0


async def hot_ids(settings: ApiSettings, service: UserService) -> list[uuid.UUID]:
    ids = [uuid.UUID(item) for item in settings.cache_warmup_ids]
    if settings.cache_warmup_recent:
        async with service.db() as session:
            ids += await UserRepository(session).recent_ids(settings.cache_warmup_recent)
    return list(dict.fromkeys(ids))


async def warm(settings: ApiSettings, service: UserService) -> int:
    """Load every hot user through the cache; the number loaded."""
    ids = await hot_ids(settings, service)
    for user_id in ids:
        await service.cache.warm(user_id, partial(service.load_user, user_id))
    return len(ids)


async def warm_up(
    settings: ApiSettings,
    keys: Keys,
    redis: RedisClient,
    service: UserService,
    replicas: ReplicaWait | None = None,
) -> None:
    try:
        async with lock(redis, keys, LOCK_RESOURCE, ttl=_LOCK_TTL, timeout=0.0, replicas=replicas):
            count = await warm(settings, service)
    except LockError as exc:
        logger.info("cache warm-up skipped: %s", exc)
        return
    except (RedisError, OSError, SQLAlchemyError) as exc:
        logger.warning("cache warm-up stopped: %s", type(exc).__name__)
        return
    logger.info("cache warm-up loaded %d users", count)
