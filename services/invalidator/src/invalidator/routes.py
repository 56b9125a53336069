"""`GET /health` and `GET /asyncapi` (`/metrics` is mounted by the factory)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from invalidator.deps import State
from shared.connections import redis_health
from shared.http import JsonResponse

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(state: State) -> JsonResponse:
    """`ok`; `degraded` when only the cache Redis is down; 503 when the stream's Redis is down
    or a consumer task died (nothing is consumed then)."""
    data = await redis_health(state.data)
    cache = data if state.cache is state.data else await redis_health(state.cache)
    failure = "; ".join(state.tasks.failures) or None
    if data.status != "ok" or failure:
        status, code = "down", 503
    else:
        status, code = ("ok" if cache.status == "ok" else "degraded"), 200
    body: dict[str, Any] = {
        "status": status,
        "consumer": state.consumer,
        "failure": failure,
        "components": {"redis": data.as_dict(), "cache": cache.as_dict()},
    }
    return JsonResponse(body, status_code=code)
