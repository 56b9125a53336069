"""Warm-up: pre-load hot users into the cache at start (CACHE_WARMUP_IDS / _RECENT).

Runs in the background so start-up never waits on it; a Redis or database failure only
means a colder cache, so it is logged, never raised.
"""

from __future__ import annotations

import logging
import uuid
from functools import partial

from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError

from api.adapters.repository import UserRepository
from api.service import UserService
from shared.keys import Keys
from shared.settings import Settings

logger = logging.getLogger(__name__)


async def hot_ids(settings: Settings, service: UserService) -> list[uuid.UUID]:
    ids = [uuid.UUID(item) for item in settings.cache_warmup_ids]
    if settings.cache_warmup_recent:
        async with service.sessions() as session:
            ids += await UserRepository(session).recent_ids(settings.cache_warmup_recent)
    return list(dict.fromkeys(ids))


async def warm_up(settings: Settings, keys: Keys, redis: Redis, service: UserService) -> None:
    del keys, redis  # kept for the single-instance lock (see _warm_once)
    try:
        ids = await hot_ids(settings, service)
        for user_id in ids:
            await service.cache.warm(user_id, partial(service.load_user, user_id))
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("cache warm-up stopped: %s", type(exc).__name__)
        return
    logger.info("cache warm-up loaded %d users", len(ids))
