"""`GET /health`: database, redis (data) and cache (cache Redis) with their latency.

`degraded` while Redis is down (the api fails open); 503 only when the database is down,
because without it nothing can be answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter

from api.adapters.db import database_health
from api.deps import State
from api.schemas import HealthOut
from shared.connections import Health, redis_health
from shared.http import JsonResponse

router = APIRouter(tags=["health"])
# A health probe must answer fast even when a dependency hangs.
_PROBE_TIMEOUT = 1.0


async def _bounded(probe: Awaitable[Health]) -> Health:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            return await probe
    except TimeoutError:
        return Health("down", None, "timeout")


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "the database is down"}},
)
async def health(state: State) -> JsonResponse:
    database, redis, cache = await asyncio.gather(
        _bounded(database_health(state.engine)),
        _bounded(redis_health(state.redis)),
        _bounded(redis_health(state.cache_redis)),
    )
    components = {"database": database, "redis": redis, "cache": cache}
    if database.status != "ok":
        status, code = "down", 503
    elif redis.status != "ok" or cache.status != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body = {"status": status, "components": {k: v.as_dict() for k, v in components.items()}}
    return JsonResponse(body, status_code=code)
