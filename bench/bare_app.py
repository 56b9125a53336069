"""Baselines for bench/api_read.py: the least a FastAPI endpoint can do for the same read.

`GET /redis/{id}`: one Redis GET of the api's cached user + orjson decode (of its data: the
api stores it with its version in front, `shared.cache.versioned`), returned as JSON, with a
default redis-py client (no timeouts: nothing to arm per command).
`GET /redis-timeouts/{id}`: the same through `shared.connections.make_redis`, the client the
api uses (socket timeouts, retries, blocking pool): what the settings' timeouts cost.
`GET /dict/{id}`: the same object from an in-process dict.
Run: `uvicorn bench.bare_app:create_app --factory` with BENCH_REDIS_URL and BENCH_KEY set
(and the api's REDIS_* variables for the second client).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException
from redis.asyncio import Redis

from shared.cache import unversioned
from shared.connections import make_redis
from shared.settings import CommonSettings, load_settings


def create_app() -> FastAPI:
    redis_url, key = os.environ["BENCH_REDIS_URL"], os.environ["BENCH_KEY"]
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        client = Redis.from_url(redis_url, max_connections=50)
        state["redis"] = client
        state["configured"] = make_redis(redis_url, load_settings(CommonSettings))
        raw = await client.get(key)
        if raw is None:
            raise RuntimeError(f"{key} is not in Redis: warm the api first")
        assert isinstance(raw, bytes)  # no decode_responses: GET answers bytes
        state["object"] = orjson.loads(unversioned(raw))
        yield
        await client.aclose()
        await state["configured"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/redis/{user_id}")
    async def from_redis(user_id: str) -> Any:
        raw = await state["redis"].get(key)
        if raw is None:
            raise HTTPException(404)
        return orjson.loads(unversioned(raw))

    @app.get("/redis-timeouts/{user_id}")
    async def from_configured_redis(user_id: str) -> Any:
        raw = await state["configured"].get(key)
        if raw is None:
            raise HTTPException(404)
        return orjson.loads(unversioned(raw))

    @app.get("/dict/{user_id}")
    async def from_dict(user_id: str) -> Any:
        return state["object"]

    return app
