"""Baselines for bench/api_read.py: the least a FastAPI endpoint can do for the same read.

`GET /redis/{id}`: one Redis GET of the api's cached user + orjson decode, returned as JSON.
`GET /dict/{id}`: the same object from an in-process dict.
Run: `uvicorn bench.bare_app:create_app --factory` with BENCH_REDIS_URL and BENCH_KEY set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException
from redis.asyncio import Redis


def create_app() -> FastAPI:
    redis_url, key = os.environ["BENCH_REDIS_URL"], os.environ["BENCH_KEY"]
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        client = Redis.from_url(redis_url, max_connections=50)
        state["redis"] = client
        raw = await client.get(key)
        if raw is None:
            raise RuntimeError(f"{key} is not in Redis: warm the api first")
        state["object"] = orjson.loads(raw)
        yield
        await client.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/redis/{user_id}")
    async def from_redis(user_id: str) -> Any:
        raw = await state["redis"].get(key)
        if raw is None:
            raise HTTPException(404)
        return orjson.loads(raw)

    @app.get("/dict/{user_id}")
    async def from_dict(user_id: str) -> Any:
        return state["object"]

    return app
